"""SDK v3 ModelTrainer's ``sm_train.sh`` (the ``command`` image kind) against real SDK-generated drivers.

The drivers are generated with the SDK v3 venv (``.venv-sdk3``: ``python3 -m venv .venv-sdk3 &&
.venv-sdk3/bin/pip install sagemaker==3.27.0``); ``sm_train.sh`` hard-codes ``/opt/ml``, so the job runs in
a private mount namespace with the temporary ml root bind-mounted there (needs root and ``unshare``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from opensage.images import resolve_training_image
from tests.unit.frameworks.helpers import REPO_ROOT, job_env, make_ml_root
from tests.unit.frameworks.test_venvs import make_local_package

SDK3_PYTHON = REPO_ROOT / ".venv-sdk3" / "bin" / "python"
GENERATOR = Path(__file__).with_name("sdk3_drivers.py")
IMAGE = "763104351884.dkr.ecr.us-west-2.amazonaws.com/pytorch-training:2.1-cpu-py310"
TRAIN_PY = textwrap.dedent("""
    import argparse, json, os, sys, localpkg
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--opt")
    parser.add_argument("--layers")
    args = parser.parse_args()
    data = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "data.csv")).read()
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
        json.dump({"epochs": args.epochs, "opt": args.opt, "layers": args.layers, "data": data,
                   "value": localpkg.VALUE, "python": sys.executable, "hps": json.loads(os.environ["SM_HPS"])}, f)
""")


def _unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = [
    pytest.mark.slow,  # SDK v3 import + venv build: ~5-8 s per test
    pytest.mark.skipif(not SDK3_PYTHON.exists(), reason="SDK v3 venv .venv-sdk3 is not installed "
                       "(python3 -m venv .venv-sdk3 && .venv-sdk3/bin/pip install sagemaker==3.27.0)"),
    pytest.mark.skipif(not _unshare_works(), reason="needs root and `unshare --mount` to bind the job's ml "
                       "root on /opt/ml, which sm_train.sh hard-codes"),
]


def _v3_job(tmp_path: Path, train_py: str, requirements: bool) -> tuple[Path, list[str]]:
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.py").write_text(train_py)
    if requirements:
        make_local_package(source / "localpkg", "localpkg")
        (source / "requirements.txt").write_text("./localpkg\n")
    root = tmp_path / "ml"
    drivers = root / "input" / "data" / "sm_drivers"
    generated = subprocess.run(
        [str(SDK3_PYTHON), str(GENERATOR), str(drivers), str(source), "train.py",
         *(["requirements.txt"] if requirements else [])],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, cwd=tmp_path)
    request = json.loads(generated.stdout.strip().splitlines()[-1])
    shutil.copytree(source, root / "input" / "data" / "code")
    make_ml_root(root, request["HyperParameters"],
                 {"train": {"data.csv": "1,2\n"}, "code": {}, "sm_drivers": {}})
    resolved = resolve_training_image(IMAGE, None, request["HyperParameters"], request["ContainerEntrypoint"],
                                      request["ContainerArguments"])
    assert resolved.kind == "command"
    return root, resolved.command


def _run_in_namespace(root: Path, command: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    """What the agent's namespace sandbox does: bind <root> on /opt/ml, cwd /opt/ml/code."""
    script = 'mkdir -p /opt/ml && mount --bind "$1" /opt/ml && shift && cd /opt/ml/code && exec "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           str(root), *command],
                          env=job_env(Path("/opt/ml"), cache, PIP_NO_INDEX="1"), capture_output=True, text=True,
                          timeout=300)


def test_sdk3_sm_train_runs_entry_script_with_requirements_in_venv(tmp_path: Path) -> None:
    root, command = _v3_job(tmp_path, TRAIN_PY, requirements=True)
    result = _run_in_namespace(root, command, tmp_path / "cache")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model = json.loads((root / "model" / "model.json").read_text())
    assert (model["epochs"], model["opt"], model["layers"], model["value"]) == (3, "adam", "[1, 2]", 42)
    assert model["data"] == "1,2\n"
    assert model["hps"] == {"epochs": 3, "opt": "adam", "layers": [1, 2]}
    assert model["python"].startswith(str(tmp_path / "cache"))  # requirements went to a venv, not the platform
    assert "Training Container Execution Completed" in result.stdout
    assert not (root / "output" / "failure").exists()


def test_sdk3_sm_train_failing_script_fails_job_with_failure_file(tmp_path: Path) -> None:
    root, command = _v3_job(tmp_path, "raise ValueError('bad input')\n", requirements=False)
    result = _run_in_namespace(root, command, tmp_path / "cache")
    assert result.returncode != 0
    failure = (root / "output" / "failure").read_text()
    assert failure.strip()
    assert "ValueError: bad input" in result.stdout + result.stderr
