"""A restarted control plane adopts a running processing job (the shared agent-job reconciler) and concludes
it from its agent's result: the job is not started twice, and it completes."""

from __future__ import annotations

import time
from pathlib import Path

from opensage.app import create_app, object_store_spec
from opensage.objects import open_store
from opensage.services.processing import ProcessingService
from opensage.settings import Settings
from tests.conftest import ROLE, free_port

SCRIPT = b"import time\nprint('working', flush=True)\ntime.sleep(2)\nprint('done', flush=True)\n"


def _platform_with_job(tmp_path: Path, name: str, script: bytes, **settings_kw: object):
    """An in-process control plane (no background loops) on a file:// store, with processing job ``name``
    created to run ``script`` (on the pytorch-training image); returns (app, settings)."""
    s3 = tmp_path / "s3"
    s3.mkdir()
    settings = Settings.build(tmp_path / "home", port=free_port(), s3_endpoint=f"file://{s3}", **settings_kw)
    app = create_app(settings, run_background=False)
    objects = open_store(object_store_spec(settings))
    objects.ensure_bucket("bucket1")
    objects.put_bytes("bucket1", f"code/{name}.py", script)
    ProcessingService(app.deps).create_processing_job(None, {
        "ProcessingJobName": name, "RoleArn": ROLE,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
                             "ContainerEntrypoint": ["python3", f"/opt/ml/processing/input/code/{name}.py"]},
        "ProcessingInputs": [{"InputName": "code", "S3Input": {
            "S3Uri": f"s3://bucket1/code/{name}.py", "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix"}}],
    })
    return app, settings


def test_processing_job_running_when_control_plane_restarts_is_adopted_and_completes(tmp_path):
    first, settings = _platform_with_job(tmp_path, "adopt-me", SCRIPT, stop_grace_seconds=5)
    first.processing.run_once()  # launches the agent
    launched = first.deps.resources.get("processing-job", "adopt-me")
    assert launched.status == "InProgress" and launched.state["_handles"]
    # The first control plane goes away without stopping its jobs; a new one starts on the same home.
    first.processing.shutdown(stop_jobs=False)
    second = create_app(settings, run_background=False)
    # The job's first start builds the PyTorch image environment in this fresh home (uv, minutes on a loaded
    # 2-core machine): the adoption itself is quick, the deadline covers the build.
    deadline = time.time() + 300
    job = launched
    while time.time() < deadline:
        second.processing.run_once()
        job = second.deps.resources.get("processing-job", "adopt-me")
        if job.status not in ("InProgress", "Stopping"):
            break
        time.sleep(0.2)
    assert job.status == "Completed", job.state.get("FailureReason")
    assert job.state["_handles"] == launched.state["_handles"]  # the same agent, not a second launch


LOUD = (b"import sys\nfor i in range(3000):\n    sys.stdout.write(f'line {i:06d} ' + 'x' * 80 + '\\n')\n"
        b"print('the last line', flush=True)\n")


def test_job_that_ended_between_passes_is_concluded_with_every_log_line(tmp_path, monkeypatch):
    """The agent writes its result last. A pass that finds every result must first read the rest of the log,
    however much is left (one read takes at most logtail.MAX_READ, made 64 KB here): ~270 KB and the final
    line arrive after the launching pass and before the next one."""
    from opensage.runner import logtail
    from opensage.runner.jobspec import JobResult

    monkeypatch.setattr(logtail, "MAX_READ", 64 * 1024)
    monkeypatch.setenv("OPENSAGE_ENVIRONMENTS", "platform")  # the platform's interpreter: no environment built
    app, settings = _platform_with_job(tmp_path, "loud", LOUD)
    app.processing.run_once()  # launches the agent
    jobdir = Path(app.deps.resources.get("processing-job", "loud").state["_jobdirs"][0])
    deadline = time.time() + 300
    while JobResult.read(jobdir) is None:
        assert time.time() < deadline, "the agent did not finish"
        time.sleep(0.2)
    app.processing.run_once()  # one pass: it finds the result
    job = app.deps.resources.get("processing-job", "loud")
    assert job.status == "Completed", job.state.get("FailureReason")
    stream = job.state["_streams"][0]
    messages = [e.message for e in app.deps.logs.events("/aws/sagemaker/ProcessingJobs", stream, None, None,
                                                         None, None, 100000, newest_first=False)]
    lines = [m for m in messages if m.startswith("line ")]
    assert len(lines) == 3000 and lines[-1].startswith("line 002999 ")
    assert "the last line" in messages
    app.processing.shutdown()


def test_agent_of_a_launch_the_control_plane_died_before_recording_is_killed_before_the_relaunch(
        tmp_path, monkeypatch):
    """The control plane dies between submitting a job's agent and saving its handle: the row says "not
    launched" while the agent runs. The next control plane launches the job again; it must first end that
    agent (and what it started) - not delete the files under it and run a second one beside it."""
    import os

    from opensage.executors.local import process_alive

    monkeypatch.setenv("OPENSAGE_ENVIRONMENTS", "platform")  # the platform's interpreter: no environment built
    first, settings = _platform_with_job(tmp_path, "unrecorded", b"import time\nprint('started', flush=True)\n"
                                         b"time.sleep(60)\nprint('done', flush=True)\n")
    before = first.deps.resources.get("processing-job", "unrecorded")  # the row as the dead plane left it
    first.processing.run_once()  # submits the agent; the save of its handle is what the crash loses
    launched = first.deps.resources.get("processing-job", "unrecorded")
    old_pid, jobdir = int(launched.state["_handles"][0]), launched.state["_jobdirs"][0]
    log = Path(jobdir) / "logs" / "algo-1.log"
    deadline = time.time() + 60
    while not (log.exists() and b"started" in log.read_bytes()):  # the job's command runs
        assert time.time() < deadline, "the job did not start"
        time.sleep(0.1)
    launched_handles = list(launched.state["_handles"])
    launched.state = before.state  # undo the save: the row says what it said before the launch
    first.deps.resources.save(launched, time.time())
    first.processing.shutdown(stop_jobs=False)

    second = create_app(settings, run_background=False)
    second.processing.run_once()  # launches again
    relaunched = second.deps.resources.get("processing-job", "unrecorded")
    assert relaunched.state["_handles"] != launched_handles
    assert not process_alive(old_pid), "the first agent still runs beside the second"
    script = "/opt/ml/processing/input/code/unrecorded.py"
    user_pids = [p for p in os.listdir("/proc") if p.isdigit() and _runs(int(p), script)]
    assert len(user_pids) <= 1, "the first launch's command still runs"
    second.processing.shutdown()


def _runs(pid: int, arg: str) -> bool:
    try:
        return arg.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
