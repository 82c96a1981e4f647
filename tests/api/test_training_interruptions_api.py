"""A training job's host lost mid-job (issue 13 item 4), injected the way ``opensage interrupt training-job``
does it: spot jobs resume from their checkpoints, RetryStrategy retries, other jobs fail naming the host,
MaxWaitTimeInSeconds stops a spot job."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from opensage.runner.interruptions import request_interrupt
from tests.conftest import training_request, wait_for_status

pytestmark = pytest.mark.slow

PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3-cpu-py311"

# Checkpoints every epoch to /opt/ml/checkpoints (synced to CheckpointConfig.S3Uri), resumes from the last one;
# the model records where each attempt started.
SCRIPT = '''
import json, os, sys, time
ckpt = "/opt/ml/checkpoints/state.json"
state = json.load(open(ckpt)) if os.path.exists(ckpt) else {"epoch": 0, "starts": []}
state["starts"].append(state["epoch"])
epochs, pause = int(os.environ.get("EPOCHS", "6")), float(os.environ.get("PAUSE", "1"))
while state["epoch"] < epochs:
    time.sleep(pause)
    state["epoch"] += 1
    json.dump(state, open(ckpt + ".tmp", "w")); os.replace(ckpt + ".tmp", ckpt)
    print("epoch", state["epoch"], flush=True)
json.dump(state, open(os.path.join(os.environ["SM_MODEL_DIR"], "state.json"), "w"))
'''


@pytest.fixture(scope="module")
def store(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("train.py")
        info.size = len(SCRIPT.encode())
        tar.addfile(info, io.BytesIO(SCRIPT.encode()))
    store.put_bytes("bucket1", "spot/code/sourcedir.tar.gz", buf.getvalue())
    return store


def _request(name: str, count: int = 1, env: dict[str, str] | None = None, **extra) -> dict:
    req = training_request(name, **extra)
    req["AlgorithmSpecification"]["TrainingImage"] = PYTORCH_IMAGE
    req["InputDataConfig"] = [{"ChannelName": "code", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": "s3://bucket1/spot/code/"}}}]
    req["HyperParameters"] = {"sagemaker_program": '"train.py"',
                              "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"'}
    req["ResourceConfig"]["InstanceCount"] = count
    req["CheckpointConfig"] = {"S3Uri": f"s3://bucket1/spot/ckpt/{name}"}
    req["Environment"] = env or {}
    return req


def _checkpointed_epoch(store, name: str) -> int:
    try:
        return json.loads(store.get_bytes("bucket1", f"spot/ckpt/{name}/state.json"))["epoch"]
    except Exception:  # noqa: BLE001 - not synced yet
        return 0


def _wait_for_checkpoint_beyond(store, name: str, epoch: int, timeout: float = 240) -> int:  # loaded 2 cores
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = _checkpointed_epoch(store, name)
        if got > epoch:
            return got
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint of {name} beyond epoch {epoch} reached S3")


def _wait_for_secondary(sm, name: str, status: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["SecondaryStatus"] == status:
            return d
        time.sleep(0.3)
    raise AssertionError(f"{name} never reached SecondaryStatus {status}")


def test_create_training_job_spot_interrupted_twice_completes_from_checkpoints(server, store):
    sm = server.client("sagemaker")
    name = "spot-twice"
    sm.create_training_job(**_request(name, env={"EPOCHS": "40", "PAUSE": "0.5"}, EnableManagedSpotTraining=True,
                                      StoppingCondition={"MaxRuntimeInSeconds": 600,
                                                         "MaxWaitTimeInSeconds": 1200}))
    seen = 0
    for _ in range(2):
        seen = _wait_for_checkpoint_beyond(store, name, seen)
        request_interrupt(server.settings.jobs_dir, name, None)
        _wait_for_secondary(sm, name, "Training")  # restarted: Interrupted -> Restarting -> ... -> Training
    d = wait_for_status(sm, name, timeout=300)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 2 and statuses.count("Restarting") == 2, statuses
    assert statuses[statuses.index("Interrupted") + 1] == "Restarting"
    blob = store.get_bytes("bucket1", f"out/{name}/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        state = json.load(tar.extractfile("state.json"))
    starts = state["starts"]
    # three attempts; each later one resumed from a checkpoint the previous attempt synced, not from 0
    assert len(starts) == 3 and starts[0] == 0 and 0 < starts[1] < starts[2] < 40, starts
    assert state["epoch"] == 40
    assert 1 <= d["BillableTimeInSeconds"] <= d["TrainingTimeInSeconds"]


def test_create_training_job_host_lost_without_spot_fails_naming_the_host(server, store):
    sm = server.client("sagemaker")
    name = "lost-host"
    sm.create_training_job(**_request(name, count=2, env={"EPOCHS": "60", "PAUSE": "0.5"}))
    _wait_for_secondary(sm, name, "Training")
    request_interrupt(server.settings.jobs_dir, name, "algo-2")
    d = wait_for_status(sm, name, timeout=120)
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("InternalServerError: Host algo-2 was lost"), d["FailureReason"]


def test_create_training_job_retry_strategy_restarts_after_a_lost_host(server, store):
    sm = server.client("sagemaker")
    name = "retried"
    sm.create_training_job(**_request(name, env={"EPOCHS": "8", "PAUSE": "0.5"},
                                      RetryStrategy={"MaximumRetryAttempts": 1}))
    _wait_for_secondary(sm, name, "Training")
    request_interrupt(server.settings.jobs_dir, name, None)
    d = wait_for_status(sm, name, timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    restarts = [t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Restarting"]
    assert len(restarts) == 1 and "retry 1 of 1" in restarts[0]["StatusMessage"]
    assert "Interrupted" not in [t["Status"] for t in d["SecondaryStatusTransitions"]]


def test_create_training_job_spot_interrupted_past_max_wait_is_stopped_max_wait_exceeded(server, store):
    """Each attempt gets what is left of MaxRuntimeInSeconds; the time lost to an interruption counts only
    against MaxWaitTimeInSeconds (from creation), which then ends the job first."""
    sm = server.client("sagemaker")
    name = "spot-maxwait"
    sm.create_training_job(**_request(name, env={"EPOCHS": "600", "PAUSE": "0.5"}, EnableManagedSpotTraining=True,
                                      StoppingCondition={"MaxRuntimeInSeconds": 15, "MaxWaitTimeInSeconds": 15}))
    _wait_for_checkpoint_beyond(store, name, 0)
    request_interrupt(server.settings.jobs_dir, name, None)
    d = wait_for_status(sm, name, timeout=120)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Stopped", "MaxWaitTimeExceeded")
    assert "Interrupted" in [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert d["BillableTimeInSeconds"] <= d["TrainingTimeInSeconds"]


def test_create_training_job_spot_agent_killed_resumes_from_checkpoint(server, store):
    """A host lost without warning (its agent SIGKILLed, as when a node dies) is an interruption too."""
    import os
    import signal

    sm = server.client("sagemaker")
    name = "spot-node-death"
    sm.create_training_job(**_request(name, env={"EPOCHS": "24", "PAUSE": "0.5"}, EnableManagedSpotTraining=True,
                                      StoppingCondition={"MaxRuntimeInSeconds": 600,
                                                         "MaxWaitTimeInSeconds": 1200}))
    _wait_for_checkpoint_beyond(store, name, 0)
    pid = int((server.settings.jobs_dir / name / "algo-1" / "agent.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    d = wait_for_status(sm, name, timeout=180)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    interrupted = [t for t in d["SecondaryStatusTransitions"] if t["Status"] == "Interrupted"]
    assert len(interrupted) == 1 and "algo-1 was lost" in interrupted[0]["StatusMessage"]
    blob = store.get_bytes("bucket1", f"out/{name}/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        starts = json.load(tar.extractfile("state.json"))["starts"]
    assert len(starts) == 2 and starts[1] > 0, starts
