"""The files that make unchanged boto3 / SageMaker SDK code talk to this platform.

``[services]`` keys are botocore service ids in snake_case (``sagemaker_runtime``, not the hyphenated
client name: boto3 silently ignores that), so they are derived from botocore's models, never typed. The
profile's global ``endpoint_url`` is the control plane too: a client for a service we do not serve is
answered here (an error naming it) and never sends the platform's keys to AWS.
"""

from __future__ import annotations

import os
from pathlib import Path

from opensage.settings import Settings

PROFILE = "opensage"
# botocore service names (client names) the control plane answers; their config keys are derived.
CONTROL_PLANE_SERVICES = ("sagemaker", "sagemaker-runtime", "sts", "logs", "cloudwatch", "iam",
                          "application-autoscaling", "sqs", "sagemaker-metrics")
# botocore loads it into every client (name=module); a Python without opensage skips it silently.
GUARD_PLUGIN = "opensage=opensage.cli.awsguard"


def service_config_key(service_name: str) -> str:
    """The ``[services]`` key botocore reads for a client name: its service id, hyphenized, in snake_case
    ("logs" -> cloudwatch_logs, "application-autoscaling" -> application_auto_scaling)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model(service_name)
    return model.service_id.hyphenize().replace("-", "_")


def config_paths(home: Path) -> dict[str, Path]:
    return {"config": home / "aws" / "config", "credentials": home / "aws" / "credentials",
            "sdk": home / "sagemaker-config.yaml"}


def write_client_config(settings: Settings, s3_endpoint: str) -> dict[str, Path]:
    paths = config_paths(settings.home)
    paths["config"].parent.mkdir(parents=True, exist_ok=True)
    lines = [f"[profile {PROFILE}]", f"region = {settings.region}", "output = json",
             # every other service: answered by the control plane ("not implemented"), never real AWS
             f"endpoint_url = {settings.endpoint_url}",
             f"services = {PROFILE}-services", "s3 =", "  addressing_style = path", "",
             f"[services {PROFILE}-services]"]
    for service in CONTROL_PLANE_SERVICES:
        lines += [f"{service_config_key(service)} =", f"  endpoint_url = {settings.endpoint_url}"]
    lines += ["s3 =", f"  endpoint_url = {s3_endpoint}", ""]
    _write(paths["config"], "\n".join(lines))
    creds = settings.credentials
    _write(paths["credentials"], f"[{PROFILE}]\naws_access_key_id = {creds.access_key}\n"
                                 f"aws_secret_access_key = {creds.secret_key}\n", private=True)
    _write(paths["sdk"], "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
                         "      TelemetryOptOut: true\n      Session:\n"
                         f"        DefaultS3Bucket: {settings.bucket}\n")
    return paths


def env_exports(home: Path) -> dict[str, str]:
    paths = config_paths(home)
    return {
        "AWS_CONFIG_FILE": str(paths["config"]),
        "AWS_SHARED_CREDENTIALS_FILE": str(paths["credentials"]),
        "AWS_PROFILE": PROFILE,
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(paths["sdk"]),
        # SDK calls that pass an explicit AWS endpoint_url (STS in get_execution_role / account_id) are
        # sent to the platform instead: see opensage/cli/awsguard.py.
        "BOTOCORE_EXPERIMENTAL__PLUGINS": GUARD_PLUGIN,
    }


def _write(path: Path, text: str, private: bool = False) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)
