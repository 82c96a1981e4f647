"""Built-in XGBoost across hosts, as SageMaker's distributed XGBoost: with ``InstanceCount > 1`` and a
``ShardedByS3Key`` train channel every host trains on its own shard and XGBoost's collective (the Rabit
tracker on algo-1, every host a worker) sums the gradient histograms, so all hosts grow the same trees: the
model equals one host's on all the data (up to the quantile sketch). algo-1 (rank 0) writes the model.

With a FullyReplicated train channel every host holds every row: training across hosts would count each row
N times, so algo-1 trains alone and the other hosts end at once (SageMaker's container also trains on the
master only in that case).

Where the tracker is: ``algo-1`` when it resolves (the job's private /etc/hosts), else its address from
``OPENSAGE_JOB_HOSTS``; its port is the job's own (``OPENSAGE_JOB_MASTER_PORT``). Supported from xgboost 1.7
(images 1.7-1 and later); with older images' xgboost (Rabit's pre-collective API) algo-1 gets every shard
(``runner/training.py`` ``reads_every_shard``) and trains alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("opensage.algorithms.xgboost")

HOSTS_ENV = "OPENSAGE_JOB_HOSTS"
MASTER_PORT_ENV = "OPENSAGE_JOB_MASTER_PORT"
DEFAULT_PORT = 9099  # the sagemaker-xgboost container's tracker port (when the platform gave none)
CONNECT_TIMEOUT_SECONDS = 600.0  # hosts start at different times (environment builds, downloads)


def cluster(resourceconfig: Path) -> tuple[list[str], str]:
    try:
        config = json.loads(resourceconfig.read_text())
    except (OSError, ValueError):
        return ["algo-1"], "algo-1"
    hosts = [str(h) for h in config.get("hosts") or ["algo-1"]]
    return hosts, str(config.get("current_host") or hosts[0])


def mode(hosts: list[str], current: str, data_config: dict[str, Any], xgb: Any) -> str:
    """``single`` (this host trains alone), ``distributed`` (this host is one worker of all) or ``idle``
    (another host trains; this one has nothing to do)."""
    if len(hosts) < 2:
        return "single"
    sharded = (data_config.get("train") or {}).get("S3DistributionType") == "ShardedByS3Key"
    if sharded and supports_collective(xgb):
        return "distributed"
    if sharded:
        log.warning("xgboost %s has no collective API: algo-1 reads every shard and trains alone",
                    xgb.__version__)
    return "single" if current == hosts[0] else "idle"


def supports_collective(xgb: Any) -> bool:
    parts = str(getattr(xgb, "__version__", "0")).split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (1, 7)
    except (ValueError, IndexError):
        return False


def _address(host: str) -> str:
    try:
        return socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0]
    except OSError:
        pairs = (item.partition("=") for item in os.environ.get(HOSTS_ENV, "").split(","))
        return {n.strip(): a.strip() for n, _, a in pairs}.get(host, "127.0.0.1")


def _port() -> int:
    try:
        return int(os.environ.get(MASTER_PORT_ENV) or DEFAULT_PORT)
    except ValueError:
        return DEFAULT_PORT


def _modern(xgb: Any) -> bool:
    return int(str(xgb.__version__).split(".")[0]) >= 2


def _start_tracker(xgb: Any, address: str, port: int, workers: int) -> Any:
    from xgboost.tracker import RabitTracker

    tracker = RabitTracker(host_ip=address, n_workers=workers, port=port, sortby="task")
    if _modern(xgb):
        tracker.start()
    else:
        tracker.start(workers)
    return tracker


def _worker_args(xgb: Any, address: str, port: int, rank: int) -> dict[str, Any]:
    if _modern(xgb):
        return {"dmlc_tracker_uri": address, "dmlc_tracker_port": port, "dmlc_task_id": str(rank)}
    return {"DMLC_TRACKER_URI": address, "DMLC_TRACKER_PORT": port, "DMLC_TASK_ID": str(rank)}


@contextlib.contextmanager
def communicator(xgb: Any, hosts: list[str], current: str) -> Iterator[int]:
    """Join the job's XGBoost collective (algo-1 also runs the tracker); yields this host's rank."""
    rank = hosts.index(current)
    address, port = _address(hosts[0]), _port()
    tracker = _start_tracker(xgb, address, port, len(hosts)) if rank == 0 else None
    args = _worker_args(xgb, address, port, rank)
    deadline = time.monotonic() + CONNECT_TIMEOUT_SECONDS
    log.info("Distributed training: host %s is worker %d of %d, tracker at %s:%d",
             current, rank, len(hosts), address, port)
    while True:  # the tracker may not listen yet (algo-1 still downloading): retry until it does
        try:
            xgb.collective.init(**args)
            break
        except xgb.core.XGBoostError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    try:
        yield rank
    finally:
        xgb.collective.finalize()
        if tracker is not None:
            with contextlib.suppress(Exception):
                if _modern(xgb):
                    tracker.wait_for(60)
                else:
                    tracker.join()
