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


def test_processing_job_running_when_control_plane_restarts_is_adopted_and_completes(tmp_path):
    s3 = tmp_path / "s3"
    s3.mkdir()
    settings = Settings.build(tmp_path / "home", port=free_port(), s3_endpoint=f"file://{s3}",
                              stop_grace_seconds=5)
    first = create_app(settings, run_background=False)
    objects = open_store(object_store_spec(settings))
    objects.ensure_bucket("bucket1")
    objects.put_bytes("bucket1", "code/job.py", SCRIPT)
    ProcessingService(first.deps).create_processing_job(None, {
        "ProcessingJobName": "adopt-me", "RoleArn": ROLE,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
                             "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/job.py"]},
        "ProcessingInputs": [{"InputName": "code", "S3Input": {
            "S3Uri": "s3://bucket1/code/job.py", "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix"}}],
    })
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
    s3 = tmp_path / "s3"
    s3.mkdir()
    settings = Settings.build(tmp_path / "home", port=free_port(), s3_endpoint=f"file://{s3}")
    app = create_app(settings, run_background=False)
    objects = open_store(object_store_spec(settings))
    objects.ensure_bucket("bucket1")
    objects.put_bytes("bucket1", "code/loud.py", LOUD)
    ProcessingService(app.deps).create_processing_job(None, {
        "ProcessingJobName": "loud", "RoleArn": ROLE,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310",
                             "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/loud.py"]},
        "ProcessingInputs": [{"InputName": "code", "S3Input": {
            "S3Uri": "s3://bucket1/code/loud.py", "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix"}}],
    })
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
