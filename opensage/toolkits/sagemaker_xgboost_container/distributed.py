"""``rabit_run`` and ``wait_hostname_resolution`` as the container's ``distributed`` module has them.

One host (or one host with data): the function runs here, ``is_master=True``. Several: every host joins the
job's XGBoost collective (``opensage.algorithms.xgboost.distributed.communicator``: the tracker on algo-1, at
the job's own port), hosts tell each other whether they have data, and the function runs on every host that
does, inside the collective, ``is_master`` on the first of them - what the container does with its two Rabit
rounds. An xgboost without the collective API (before 1.7) cannot join: the first host with data trains alone.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from opensage.algorithms.xgboost import distributed as platform

log = logging.getLogger("sagemaker_xgboost_container.distributed")
RESOLVE_TIMEOUT_SECONDS = 600.0


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
        return True
    except OSError:  # the platform's own host list stands in for DNS where the job has no /etc/hosts entry
        names = (item.partition("=")[0].strip() for item in os.environ.get(platform.HOSTS_ENV, "").split(","))
        return host in names


def wait_hostname_resolution(sm_hosts: list[str]) -> None:
    """Wait until every host of the job resolves (the container waits for SageMaker's DNS entries)."""
    deadline = time.monotonic() + RESOLVE_TIMEOUT_SECONDS
    for host in sm_hosts:
        while not _resolves(host):
            if time.monotonic() > deadline:
                raise RuntimeError(f"host {host} did not resolve within {RESOLVE_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.5)


def _run(exec_fun: Callable[..., Any], args: dict[str, Any], is_master: bool, update_rabit_args: bool) -> Any:
    if update_rabit_args:
        args = {**args, "is_master": is_master}
    return exec_fun(**args)


def rabit_run(exec_fun: Callable[..., Any], args: dict[str, Any], include_in_training: bool, hosts: list[str],
              current_host: str, first_port: int | None = None, second_port: int | None = None,
              max_connect_attempts: int | None = None, connect_retry_timeout: int = 3,
              update_rabit_args: bool = False) -> Any:
    """Run ``exec_fun(**args)`` on the hosts with data, in the job's collective (see the module docstring).
    The ports and retry settings are the platform's (the job's own tracker port); they are accepted for the
    container's signature."""
    import xgboost as xgb

    hosts = list(hosts)
    if len(hosts) < 2:
        return _run(exec_fun, args, True, update_rabit_args) if include_in_training else None
    if not platform.supports_collective(xgb):
        log.warning("xgboost %s has no collective API: %s trains alone", xgb.__version__, hosts[0])
        if current_host == hosts[0] and include_in_training:
            return _run(exec_fun, args, True, update_rabit_args)
        return None
    import numpy as np

    with platform.communicator(xgb, hosts, current_host) as rank:
        flags = np.zeros(len(hosts), dtype=np.float64)
        flags[rank] = 1.0 if include_in_training else 0.0
        with_data = [h for h, f in zip(hosts, xgb.collective.allreduce(flags, xgb.collective.Op.SUM), strict=True)
                     if f > 0]
        if not with_data:
            raise RuntimeError("No host has training data: every host's channel is empty.")
        if with_data == hosts:
            return _run(exec_fun, args, rank == 0, update_rabit_args)
    if current_host not in with_data:
        log.info("%s has no data: it does not take part in training", current_host)
        return None
    if len(with_data) == 1:
        return _run(exec_fun, args, True, update_rabit_args)
    # A second round among the hosts with data (the container's second Rabit), on the next port.
    os.environ[platform.MASTER_PORT_ENV] = str(second_port or platform._port() + 1)  # noqa: SLF001
    with platform.communicator(xgb, with_data, current_host) as rank:
        return _run(exec_fun, args, rank == 0, update_rabit_args)
