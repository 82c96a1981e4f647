"""Durability: killing the control plane loses no rows; running jobs are adopted or failed on restart."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import time

import boto3
import pytest
from botocore.config import Config

from tests.e2e.conftest import ROLE, start_platform, stop_platform

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def _session(p):
    # Explicit files (not the process env or boto3's cached default session): other tests in this worker
    # point the env at another platform.
    import botocore.session

    core = botocore.session.Session()
    core.set_config_variable("config_file", p.env["AWS_CONFIG_FILE"])
    core.set_config_variable("credentials_file", p.env["AWS_SHARED_CREDENTIALS_FILE"])
    core.set_config_variable("profile", "opensage")
    return boto3.Session(botocore_session=core)


def _clients(p):
    session = _session(p)
    cfg = Config(retries={"max_attempts": 2})
    return session.client("sagemaker", config=cfg), session.client("s3", config=cfg)


def _source(script: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = script.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _create(sm, s3, bucket: str, name: str, script: str) -> None:
    s3.put_object(Bucket=bucket, Key=f"{name}/source/sourcedir.tar.gz", Body=_source(script))
    sm.create_training_job(
        TrainingJobName=name, RoleArn=ROLE,
        AlgorithmSpecification={"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"sagemaker_program": '"train.py"',
                         "sagemaker_submit_directory": f'"s3://{bucket}/{name}/source/sourcedir.tar.gz"'},
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 600})


def _wait(sm, name: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.5)
    raise AssertionError(f"{name} did not finish")


def _wait_log(path, text: str) -> None:
    deadline = time.time() + 60
    while not (path.exists() and text in path.read_text()):
        assert time.time() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.2)


def _wait_training(sm, name: str) -> None:
    deadline = time.time() + 180  # a first job builds the scikit-learn environment; slow on a loaded machine
    while sm.describe_training_job(TrainingJobName=name)["SecondaryStatus"] != "Training":
        assert time.time() < deadline, "job never reached Training"
        time.sleep(0.3)


def test_control_plane_killed_running_job_is_adopted_and_lost_agent_fails(tmp_path):
    home = tmp_path / "home"
    p = start_platform(home)
    sm, s3 = _clients(p)
    bucket = "sagemaker-us-east-1-000000000000"
    # Long enough to outlive the restart: S3 (SeaweedFS) goes down with `up` and comes back with it.
    slow = ("import time, os\nfor i in range(8):\n    print('tick', i, flush=True)\n    time.sleep(2)\n"
            "open(os.path.join(os.environ['SM_MODEL_DIR'], 'm.txt'), 'w').write('ok')\n")
    _create(sm, s3, bucket, "adopt-me", slow)
    _create(sm, s3, bucket, "lose-me", "import time\ntime.sleep(60)\n")
    _wait_training(sm, "adopt-me")
    _wait_training(sm, "lose-me")
    _wait_log(home / "jobs" / "adopt-me" / "algo-1" / "logs" / "algo-1.log", "tick 0")
    # The control plane dies without any chance to clean up.
    os.kill(p.proc.pid, signal.SIGKILL)
    p.proc.wait()
    # While it is down, the second job's agent (and its job) die too.
    jobdir = home / "jobs" / "lose-me" / "algo-1"
    agent_pid = int((jobdir / "agent.pid").read_text())
    os.killpg(agent_pid, signal.SIGKILL)
    p2 = start_platform(home)
    try:
        sm, s3 = _clients(p2)
        adopted = _wait(sm, "adopt-me")
        assert adopted["TrainingJobStatus"] == "Completed", adopted.get("FailureReason")
        lost = _wait(sm, "lose-me")
        assert lost["TrainingJobStatus"] == "Failed"
        assert "ended without reporting a result" in lost["FailureReason"]
        logs = _session(p2).client("logs")
        stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                           logStreamNamePrefix="adopt-me/")["logStreams"][0]["logStreamName"]
        messages = [e["message"] for e in logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"]]
        assert [m for m in messages if m.startswith("tick")] == [f"tick {i}" for i in range(8)]
    finally:
        stop_platform(p2)


def test_second_up_on_same_home_says_one_is_running(tmp_path):
    import subprocess
    import sys

    home = tmp_path / "home"
    p = start_platform(home)
    try:
        out = subprocess.run([sys.executable, "-m", "opensage.cli.main", "up", "--home", str(home), "--port",
                              "0"], capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert "already running" in out.stderr
    finally:
        stop_platform(p)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_agent_killed_job_failed_and_user_script_gone(tmp_path):
    """Issue 7 item 10: SIGKILL of the agent alone (not its group) must not leave the user's script running,
    nor a child that left the group."""
    home = tmp_path / "home"
    p = start_platform(home)
    try:
        sm, s3 = _clients(p)
        bucket = "sagemaker-us-east-1-000000000000"
        script = ("import os, subprocess, sys, time\n"
                  "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
                  "start_new_session=True)\n"
                  "open(os.path.join(os.environ['SM_MODEL_DIR'], 'pids'), 'w').write(f'{os.getpid()} {child.pid}')\n"
                  "time.sleep(300)\n")
        _create(sm, s3, bucket, "orphan-me", script)
        jobdir = home / "jobs" / "orphan-me" / "algo-1"
        pids_file = jobdir / "ml" / "model" / "pids"
        deadline = time.time() + 90
        while not (pids_file.exists() and len(pids_file.read_text().split()) == 2):
            assert time.time() < deadline, "the script never started"
            time.sleep(0.2)
        pids = [int(x) for x in pids_file.read_text().split()]
        os.kill(int((jobdir / "agent.pid").read_text()), signal.SIGKILL)
        d = _wait(sm, "orphan-me")
        assert d["TrainingJobStatus"] == "Failed" and "ended without reporting a result" in d["FailureReason"]
        deadline = time.time() + 5
        while any(_running(pid) for pid in pids):
            assert time.time() < deadline, "the job's processes outlived the job"
            time.sleep(0.1)
    finally:
        stop_platform(p)


def test_object_store_killed_health_reports_it_and_it_comes_back_with_its_data(tmp_path):
    """kill -9 of SeaweedFS: /_opensage/health names the object store while it is down (503), the
    supervisor restarts it, and the objects written before are still there (issue 7 item 9)."""
    import httpx

    p = start_platform(tmp_path / "home")
    try:
        _, s3 = _clients(p)
        s3.create_bucket(Bucket="durable")
        s3.put_object(Bucket="durable", Key="k", Body=b"kept")
        health = httpx.get(p.url + "/_opensage/health", timeout=5)
        assert health.status_code == 200 and health.json()["components"] == {"object_store": "ok"}
        weed_pid = int((p.home / "s3" / "weed.pid").read_text())
        os.kill(weed_pid, signal.SIGKILL)
        seen: set[int] = set()
        deadline = time.time() + 90
        while time.time() < deadline:
            answer = httpx.get(p.url + "/_opensage/health", timeout=5)
            seen.add(answer.status_code)
            new_pid = (p.home / "s3" / "weed.pid").read_text().strip()
            if answer.status_code == 200 and new_pid != str(weed_pid):
                break
            time.sleep(0.1)
        assert 503 in seen, "health never reported the object store down"
        assert answer.status_code == 200 and answer.json()["components"]["object_store"] == "ok"
        assert s3.get_object(Bucket="durable", Key="k")["Body"].read() == b"kept"
    finally:
        stop_platform(p)
