"""Build a job's /opt/ml tree the way the agent does (config files + channel data)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def make_ml_root(root: Path, hyperparameters: dict[str, str], channels: dict[str, dict[str, str]] | None = None,
                 hosts: list[str] | None = None) -> Path:
    """``root`` becomes an ml root: input/config/*.json, input/data/<channel>/<files>, model/, output/."""
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    channels = channels or {}
    hosts = hosts or ["algo-1"]
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels}))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": hosts[0], "current_instance_type": "ml.m5.large", "current_group_name": "homogeneousCluster",
        "hosts": hosts, "network_interface_name": "eth0",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.large",
                             "hosts": hosts}]}))
    for name, files in channels.items():
        for rel, text in files.items():
            path = root / "input" / "data" / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for sub in ("model", "output/data", "code"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def make_sourcedir_tar(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def job_env(ml_root: Path, cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_", "PYTHONPATH"))}
    env.update({"SAGEMAKER_BASE_DIR": str(ml_root), "PYTHONPATH": str(REPO_ROOT),
                "OPENSAGE_VENV_CACHE": str(cache), "PIP_NO_INDEX": "1", "TRAINING_JOB_NAME": "job-1",
                "AWS_DEFAULT_REGION": "us-east-1"})
    env.update(extra)
    return env


def run_toolkit(ml_root: Path, cache: Path, *args: str, timeout: float = 120,
                **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opensage.frameworks.training", *args],
                          cwd=ml_root / "code", env=job_env(ml_root, cache, **extra), capture_output=True,
                          text=True, timeout=timeout)
