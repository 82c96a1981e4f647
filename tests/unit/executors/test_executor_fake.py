from __future__ import annotations

import json
import tarfile
from pathlib import Path

from opensage.executors.fake import FakeExecutor, FakeRun
from opensage.objects import open_store
from opensage.runner.jobspec import JobResult, JobSpec, ObjectStoreSpec


def make_job(tmp_path: Path, name: str = "j") -> Path:
    jobdir = tmp_path / name
    jobdir.mkdir()
    JobSpec(job_name=name, job_arn=f"arn:{name}", kind="training", command=["x"], environment={}, channels=[],
            object_store=ObjectStoreSpec(f"file://{tmp_path / 'store'}"),
            model_s3_uri="s3://bkt/out/model.tar.gz").write(jobdir)
    return jobdir


def test_fake_submit_default_run_completes_at_once(tmp_path: Path) -> None:
    executor = FakeExecutor()
    jobdir = make_job(tmp_path)
    handle = executor.submit(jobdir)
    assert not executor.is_running(handle)
    assert JobResult.read(jobdir) == JobResult(exit_code=0)
    statuses = [json.loads(x)["status"] for x in (jobdir / "events.jsonl").read_text().splitlines()]
    assert statuses == ["Downloading", "Training", "Uploading"]


def test_fake_scripted_failure_writes_logs_and_reason(tmp_path: Path) -> None:
    executor = FakeExecutor()
    executor.script("bad", FakeRun(log_lines=["[0]\ttrain-rmse:1.5", "boom"],
                                   result=JobResult(exit_code=1, failure_reason="ValueError: boom")))
    jobdir = make_job(tmp_path, "bad")
    executor.submit(jobdir)
    lines = (jobdir / "logs" / "algo-1.log").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["[0]\ttrain-rmse:1.5", "boom"]
    assert all(line.split(" ", 1)[0].isdigit() for line in lines)
    assert JobResult.read(jobdir) == JobResult(exit_code=1, failure_reason="ValueError: boom")


def test_fake_keep_running_until_stop_then_stopped_result(tmp_path: Path) -> None:
    executor = FakeExecutor(FakeRun(keep_running=True))
    jobdir = make_job(tmp_path)
    handle = executor.submit(jobdir)
    assert executor.is_running(handle) and JobResult.read(jobdir) is None
    executor.stop(handle)
    assert not executor.is_running(handle)
    result = JobResult.read(jobdir)
    assert result is not None and result.stopped and executor.stops == [handle]


def test_fake_kill_leaves_no_result_and_finish_uploads_model(tmp_path: Path) -> None:
    (tmp_path / "store" / "bkt").mkdir(parents=True)
    store = open_store(ObjectStoreSpec(f"file://{tmp_path / 'store'}"))
    executor = FakeExecutor(FakeRun(keep_running=True, model_files={"model.json": b"{}"}), store=store)
    killed = executor.submit(make_job(tmp_path, "k"))
    executor.kill(killed)
    assert not executor.is_running(killed) and JobResult.read(tmp_path / "k") is None
    handle = executor.submit(make_job(tmp_path, "f"))
    executor.finish(handle)
    result = JobResult.read(tmp_path / "f")
    assert result is not None and result.model_uploaded
    with tarfile.open(tmp_path / "store" / "bkt" / "out" / "model.tar.gz") as tar:
        assert tar.getnames() == ["model.json"]
