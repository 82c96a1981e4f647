"""``opensage interrupt training-job NAME``: lose a host of a running training job, as a spot interruption or
a dead node would, so users can test their checkpointing locally (SageMaker itself has no such command).

It asks the platform (a request file in the job's directory, read by the training reconciler, which kills
the host through its executor: ``runner/interruptions.py``). The job then resumes from its checkpoints
(EnableManagedSpotTraining), is retried (RetryStrategy), or fails with a FailureReason naming the host.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.group()
def interrupt() -> None:
    """Inject failures into running jobs (to test checkpointing and retries)."""


@interrupt.command("training-job")
@click.argument("name")
@click.option("--host", default=None, help="The host to lose, e.g. algo-2 (default: the job's last host).")
@click.option("--home", default=lambda: os.environ.get("OPENSAGE_HOME") or str(Path.home() / ".opensage"),
              show_default="~/.opensage", help="The platform running the job.")
def training_job(name: str, host: str | None, home: str) -> None:
    """Interrupt training job NAME: one of its hosts is lost now."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from opensage.cli.clientconfig import config_paths, env_exports
    from opensage.runner.interruptions import request_interrupt

    root = Path(home).expanduser().resolve()
    if config_paths(root)["config"].exists():
        os.environ.update(env_exports(root))
    try:
        job = boto3.Session().client("sagemaker").describe_training_job(TrainingJobName=name)
    except (ClientError, BotoCoreError) as e:
        raise click.ClickException(str(e)) from None
    if job["TrainingJobStatus"] != "InProgress":
        raise click.ClickException(f"Training job {name} is {job['TrainingJobStatus']}: only a job in "
                                   f"progress can be interrupted.")
    count = int((job.get("ResourceConfig") or {}).get("InstanceCount") or 1)
    hosts = [f"algo-{i + 1}" for i in range(count)]
    if host is not None and host not in hosts:
        raise click.ClickException(f"Training job {name} has hosts {', '.join(hosts)}, not {host}.")
    try:
        request_interrupt(root / "jobs", name, host or hosts[-1])  # Settings.jobs_dir
    except OSError as e:
        raise click.ClickException(f"Could not reach the job's directory: {e}") from None
    if job.get("EnableManagedSpotTraining"):
        then = "it restarts from its last checkpoint (SecondaryStatus Interrupted, then Restarting)"
    elif (job.get("RetryStrategy") or {}).get("MaximumRetryAttempts"):
        then = "it is retried while RetryStrategy allows, then fails"
    else:
        then = "it fails with a FailureReason naming the host"
    click.echo(f"Interrupting {host or hosts[-1]} of training job {name}: {then}.")
