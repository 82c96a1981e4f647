"""Each script in examples/ runs to the end against a real `opensage up`, as a newcomer runs it: a separate
Python process with only `opensage env`'s exports added to the environment (issue 8 item 10)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(platform, script: str, timeout: float = 300) -> str:
    env = {**os.environ, **platform.env, "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / script)], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=EXAMPLES.parent)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{output[-6000:]}"
    return output


def test_example_01_xgboost_train_deploy_runs_to_the_end(platform):
    out = run_example(platform, "01_xgboost_train_deploy.py")
    assert "accuracy on 114 held-out rows" in out


def test_example_02_sklearn_script_batch_transform_runs_to_the_end(platform):
    out = run_example(platform, "02_sklearn_script_batch_transform.py")
    assert "100 predictions" in out


def test_example_03_ab_variants_canary_runs_to_the_end(platform):
    out = run_example(platform, "03_ab_variants_canary.py")
    assert "canary rollout finished: InService" in out


def test_example_04_async_autoscaling_runs_to_the_end(platform):
    out = run_example(platform, "04_async_autoscaling.py")
    assert "50 scores from S3" in out


def test_examples_each_script_has_a_test():
    scripts = sorted(p.name for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    tested = [name for name in globals() if name.startswith("test_example_")]
    assert len(scripts) == len(tested) == 4, (scripts, tested)
