"""`opensage up | env`."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

import click

from opensage.cli.clientconfig import env_exports, write_client_config
from opensage.cli.interrupt import interrupt
from opensage.cli.pipeline import pipeline
from opensage.settings import SettingError, Settings


def _default_home() -> str:
    return os.environ.get("OPENSAGE_HOME") or str(Path.home() / ".opensage")


@click.group()
def main() -> None:
    """OpenSage: SageMaker's API and workflow on your own machine."""


class AlreadyRunning(click.ClickException):
    exit_code = 3


def _lock(home: Path):
    home.mkdir(parents=True, exist_ok=True)
    handle = open(home / "opensage.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        info = handle.read().strip() or "unknown"
        raise AlreadyRunning(f"OpenSage is already running for home {home} ({info}). "
                             "Stop it first, or use another --home.") from None
    return handle


@main.command()
@click.option("--home", default=_default_home, show_default="~/.opensage", help="Where data and config live.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address of the control plane (0.0.0.0: every interface; every request is SigV4-signed).")
@click.option("--port", default=7420, show_default=True, type=int)
@click.option("--db", default=None, help="Metadata store URL (default: SQLite under --home).")
@click.option("--s3-endpoint", default=None, help="Use this S3-compatible endpoint instead of SeaweedFS.")
@click.option("--log-level", default="info", show_default=True)
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where job instances run: local subprocesses (default) or a Ray cluster.")
@click.option("--ray-address", default=None, metavar="HOST:PORT",
              help="The Ray cluster's GCS address (default: auto, the cluster of this node).")
@click.option("--ray-capacity-wait", default=None, type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long a job Ray cannot place waits before failing with CapacityError (0: for ever; "
                   "default: $OPENSAGE_RAY_CAPACITY_WAIT_SECONDS or 3600).")
@click.option("--instance-types", default=None, type=click.Path(dir_okay=False),
              help="JSON file overriding the resources of ml.* instance types (default: <home>/instance-types.json).")
def up(home: str, host: str, port: int, db: str | None, s3_endpoint: str | None, log_level: str,
       executor: str | None, ray_address: str | None, instance_types: str | None,
       ray_capacity_wait: float | None) -> None:
    """Start the platform in the foreground (Ctrl-C stops it and everything it started)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    home_path = Path(home).expanduser().resolve()
    lock = _lock(home_path)
    # Python's default SIGTERM skips `finally`; make it unwind so SeaweedFS and jobs are stopped too.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        settings = Settings.build(home_path, host=host, port=port, db_url=db, s3_endpoint=s3_endpoint,
                                  executor=executor, ray_address=ray_address,
                                  ray_capacity_wait_seconds=ray_capacity_wait,
                                  instance_types_file=Path(instance_types).resolve() if instance_types else None)
    except SettingError as exc:
        raise click.ClickException(str(exc)) from None
    from opensage.credentials import CredentialAuthority

    # One authority for the control plane and the S3 proxy: both accept jobs' temporary credentials.
    authority = CredentialAuthority(settings.credentials)
    seaweed = None
    try:
        if not settings.s3_endpoint:
            from opensage.objects.seaweed import SeaweedServer
            from opensage.server.http_limits import raise_open_files_limit

            raise_open_files_limit()  # before the S3 proxy sizes its connection cap from it

            # weed's own ports stay on loopback; only the SigV4 proxy binds --host, and jobs on other nodes
            # get the advertised address (settings.public_host) when --host is not loopback.
            seaweed = SeaweedServer(home_path / "s3", 0, settings.credentials.access_key,
                                    settings.credentials.secret_key, host="127.0.0.1",
                                    front_host=settings.host, advertise_host=settings.object_store_public_host,
                                    die_with_parent=True, authority=authority)
            seaweed.start()
            click.echo("Starting the object store (SeaweedFS)...", err=True)
            seaweed.wait_ready(timeout=120)
            from dataclasses import replace

            settings = replace(settings, s3_endpoint=seaweed.endpoint_url)
        health = (lambda: {"object_store": seaweed.health()}) if seaweed is not None else None
        _serve(settings, lock, authority, health)
    finally:
        if seaweed is not None:
            seaweed.stop()
        lock.close()


def _exit_on_signal(signum, frame) -> None:  # noqa: ANN001
    raise SystemExit(128 + signum)


def _serve(settings: Settings, lock, authority, health=None) -> None:
    import uvicorn

    from opensage.app import create_app, object_store_spec
    from opensage.objects import open_store
    from opensage.server.http_limits import raise_open_files_limit, server_config

    # Before anything opens files: idle clients must not starve the reconcilers of descriptors (issue 7).
    open_files = raise_open_files_limit()

    from opensage.cli.ray_executor import build_executor

    open_store(object_store_spec(settings)).ensure_bucket(settings.bucket)
    paths = write_client_config(settings, settings.s3_endpoint or "")
    platform = create_app(settings, executor=build_executor(settings), credentials=authority, health=health)
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"pid": os.getpid(), "url": settings.endpoint_url}))
    lock.flush()
    click.echo(f"OpenSage control plane on {settings.endpoint_url}, S3 on {settings.s3_endpoint}", err=True)
    click.echo(f"Client config written to {paths['config']}. In another shell run:\n"
               f"  eval \"$({shlex.quote(sys.argv[0])} env --home {shlex.quote(str(settings.home))})\"",
               err=True)
    # Read deadline per request, connection cap and keep-alive timeout: see server/http_limits.py.
    uvicorn.Server(server_config(platform.asgi, settings.host, settings.port, open_files=open_files)).run()


@main.command()
@click.option("--home", default=_default_home, show_default="~/.opensage")
def env(home: str) -> None:
    """Print the exports that point boto3 and the SageMaker SDK at this platform."""
    for key, value in env_exports(Path(home).expanduser().resolve()).items():
        click.echo(f"export {key}={shlex.quote(value)}")


@main.command()
@click.argument("image")
@click.option("--home", default=_default_home, show_default="~/.opensage")
@click.option("--builtin", is_flag=True, help="The environment of the image's built-in algorithm (algorithm "
              "mode) instead of its script mode.")
def pull(image: str, home: str, builtin: bool) -> None:
    """Build (and cache) the environment that stands in for IMAGE, as `docker pull` fetches an image.

    Jobs build it on first use; pulling first makes that instant, and works on a machine that is offline
    later. Example: opensage pull 683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1
    """
    from opensage import environments, images

    spec = images.environment_for_image(image, "builtin" if builtin else "script")
    if spec is None:
        click.echo(f"{image} runs in the platform's own environment here: nothing to pull.")
        return
    root = environments.cache_root(Path(home).expanduser().resolve())
    try:
        env = environments.ensure_environment(spec, root, log=lambda line: click.echo(line, err=True),
                                              policy="auto")
    except environments.EnvironmentError as exc:
        raise click.ClickException(str(exc)) from None
    if env.directory is None:
        click.echo(f"{image}: the platform's own environment already satisfies "
                   f"{', '.join(spec.requirements)}; nothing to pull.")
    else:
        click.echo(f"{image}: environment ready at {env.directory} (python {env.python}).")


main.add_command(pipeline)
main.add_command(interrupt)

if __name__ == "__main__":
    main()
