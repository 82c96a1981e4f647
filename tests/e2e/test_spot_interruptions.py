"""Managed spot training with the unmodified SDK v2 (issue 13 item 4): ``use_spot_instances=True``,
``max_wait`` and ``checkpoint_s3_uri``; the operator interrupts the job twice with ``opensage interrupt
training-job`` and it completes from its checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import textwrap
import time

import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SCRIPT = textwrap.dedent('''
    import argparse, json, os, time
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int)
    args = p.parse_args()
    ckpt = os.path.join("/opt/ml/checkpoints", "state.json")
    state = json.load(open(ckpt)) if os.path.exists(ckpt) else {"epoch": 0, "starts": []}
    state["starts"].append(state["epoch"])
    print("starting at epoch", state["epoch"], flush=True)
    while state["epoch"] < args.epochs:
        time.sleep(0.5)
        state["epoch"] += 1
        json.dump(state, open(ckpt + ".tmp", "w"))
        os.replace(ckpt + ".tmp", ckpt)
    json.dump(state, open(os.path.join(os.environ["SM_MODEL_DIR"], "state.json"), "w"))
''')


def _checkpoint_epoch(sm_session, uri: str) -> int:
    import sagemaker

    try:
        return json.loads(sagemaker.s3.S3Downloader.read_file(f"{uri}/state.json", sm_session))["epoch"]
    except Exception:  # noqa: BLE001 - not synced yet
        return 0


def test_spot_training_job_interrupted_twice_completes_from_checkpoints(platform, sm_session, tmp_path):
    import sagemaker
    from sagemaker.pytorch import PyTorch

    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(SCRIPT)
    bucket = sm_session.default_bucket()
    checkpoints = f"s3://{bucket}/e2e/spot/checkpoints"
    est = PyTorch(entry_point="train.py", source_dir=str(src), role=ROLE, framework_version="2.3",
                  py_version="py311", instance_count=1, instance_type="ml.m5.xlarge",
                  sagemaker_session=sm_session, output_path=f"s3://{bucket}/e2e/spot/out",
                  hyperparameters={"epochs": 60}, use_spot_instances=True, max_run=900, max_wait=1800,
                  checkpoint_s3_uri=checkpoints)
    est.fit(wait=False)
    name = est.latest_training_job.name
    seen = 0
    for interruption in (1, 2):
        deadline = time.time() + 120
        while (epoch := _checkpoint_epoch(sm_session, checkpoints)) <= seen and time.time() < deadline:
            time.sleep(1)
        assert epoch > seen, "no new checkpoint reached S3"
        seen = epoch
        done = subprocess.run([sys.executable, "-m", "opensage.cli.main", "interrupt", "training-job", name,
                               "--home", str(platform.home)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "restarts from its last checkpoint" in done.stdout
        deadline = time.time() + 60  # wait for the restart before the next interruption
        while time.time() < deadline:
            desc = est.latest_training_job.describe()
            if [t["Status"] for t in desc["SecondaryStatusTransitions"]].count("Restarting") >= interruption \
                    and desc["SecondaryStatus"] == "Training":
                break
            time.sleep(1)
    est.latest_training_job.wait(logs=False)
    desc = est.latest_training_job.describe()
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    statuses = [t["Status"] for t in desc["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 2 and statuses.count("Restarting") == 2, statuses
    assert desc["EnableManagedSpotTraining"] is True
    assert 1 <= desc["BillableTimeInSeconds"] <= desc["TrainingTimeInSeconds"]
    local = sagemaker.s3.S3Downloader.download(est.model_data, str(tmp_path), sagemaker_session=sm_session)[0]
    with tarfile.open(local) as tar:
        state = json.load(tar.extractfile("state.json"))
    assert state["epoch"] == 60
    starts = state["starts"]
    assert len(starts) == 3 and starts[0] == 0 and 0 < starts[1] < starts[2] < 60, starts
