"""`opensage up --executor ray`: build the Ray executor from settings and say what the cluster offers."""

from __future__ import annotations

import ipaddress
import logging
import os
from urllib.parse import urlparse

import click

from opensage.settings import Settings

log = logging.getLogger(__name__)


def build_executor(settings: Settings):  # noqa: ANN201 - an Executor, or None for create_app's default
    """None for the local executor (create_app's default); a connected RayExecutor for ``ray``."""
    if settings.executor == "local":
        return None
    if settings.executor != "ray":
        raise click.BadParameter(f"unknown executor {settings.executor!r} (local or ray)", param_hint="--executor")
    try:
        from opensage.executors.instance_types import InstanceTypes
        from opensage.executors.ray import CAPACITY_WAIT_SECONDS, RayExecutor, namespace_for
    except ImportError as exc:  # ray is an optional extra
        raise click.ClickException(f"--executor ray needs Ray: pip install 'opensage[ray]' ({exc})") from None
    try:
        types = InstanceTypes.load(settings.instance_types_path)
    except ValueError as exc:
        raise click.ClickException(f"instance types file: {exc}") from None
    # How long a job may wait for room before it fails with SageMaker's CapacityError (0: for ever):
    # --ray-capacity-wait or OPENSAGE_RAY_CAPACITY_WAIT_SECONDS, read by Settings (None: unset or not a number).
    wait = settings.ray_capacity_wait_seconds
    if wait is None:
        if os.environ.get("OPENSAGE_RAY_CAPACITY_WAIT_SECONDS", "").strip():
            raise click.ClickException("OPENSAGE_RAY_CAPACITY_WAIT_SECONDS must be a number of seconds")
        wait = CAPACITY_WAIT_SECONDS
    executor = RayExecutor(settings.ray_address or "auto", namespace_for(settings.home), types,
                           capacity_wait_seconds=wait if wait > 0 else None)
    try:
        executor.connect()
        summary = executor.cluster_summary()
    except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ...
        raise click.ClickException(f"could not join the Ray cluster at {settings.ray_address or 'auto'}: "
                                   f"{exc}") from None
    click.echo(f"Jobs run on the Ray cluster at {settings.ray_address or 'auto'}: {summary}", err=True)
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        click.echo("Warning: Ray token authentication is off (RAY_AUTH_MODE=token): Ray's own ports accept anyone "
                   "on the network, who can then run code on every node.", err=True)
    s3_host = urlparse(settings.s3_endpoint or "").hostname or "127.0.0.1"
    if _is_loopback(s3_host) and not _is_loopback(settings.host):
        click.echo("Note: the object store is on a loopback address; Ray nodes on other machines "
                   "need --s3-endpoint (an S3 they can reach).", err=True)
    return executor


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
