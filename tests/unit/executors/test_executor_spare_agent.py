"""The spare agent: a pre-started agent process that takes the next job (executors/local.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from opensage.executors.local import LocalExecutor, process_alive
from opensage.runner.jobspec import JobResult, JobSpec, ObjectStoreSpec


def make_job(root: Path, name: str, command: list[str]) -> Path:
    (root / "store" / "bkt").mkdir(parents=True, exist_ok=True)
    jobdir = root / name
    jobdir.mkdir()
    JobSpec(job_name=name, job_arn=f"arn:{name}", kind="training", command=command, environment={}, channels=[],
            object_store=ObjectStoreSpec(f"file://{root / 'store'}"), stop_grace_seconds=2).write(jobdir)
    return jobdir


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def cmdline(pid: str) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


@pytest.fixture
def executor():  # type: ignore[no-untyped-def]
    ex = LocalExecutor()
    yield ex
    ex.close()


def test_submit_second_job_runs_in_spare_agent_logging_to_its_own_dir(tmp_path: Path, executor) -> None:
    first = make_job(tmp_path, "first", ["true"])
    assert executor.submit(first)
    second = make_job(tmp_path, "second", ["sh", "-c", "echo from-second; sleep 1"])
    handle = executor.submit(second)
    assert b"--spare" in cmdline(handle)  # the process started after the first submit took this job
    wait_for(lambda: os.readlink(f"/proc/{handle}/cwd") == str(second.resolve()))
    # A control plane restarted meanwhile recognises it by its working directory, not by its pid alone.
    assert process_alive(int(handle), str(second.resolve()))
    assert not process_alive(int(handle), str(first.resolve()))
    wait_for(lambda: not executor.is_running(handle))
    result = JobResult.read(second)
    assert result is not None and result.exit_code == 0
    assert "job agent done" in (second / "agent.log").read_text()
    assert "from-second" in (second / "logs" / "algo-1.log").read_text()
    assert (second / "agent.pid").read_text() == handle


def test_submit_with_changed_environment_does_not_use_spare(tmp_path: Path, executor,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    executor.submit(make_job(tmp_path, "first", ["true"]))
    spare = executor._spare[0]
    monkeypatch.setenv("OPENSAGE_SPARE_TEST_SETTING", "changed")  # an agent must see the current environment
    handle = executor.submit(make_job(tmp_path, "second", ["true"]))
    assert b"--spare" not in cmdline(handle)
    wait_for(lambda: spare.poll() is not None)  # the stale spare ended, having run no job
    assert not (tmp_path / "second" / "agent.log").read_text().count("job agent done") > 1


def test_close_ends_idle_spare_without_a_job(tmp_path: Path) -> None:
    executor = LocalExecutor()
    executor.submit(make_job(tmp_path, "first", ["true"]))
    spare = executor._spare[0]
    executor.close()
    assert spare.poll() == 0  # exited on its own when its stdin closed
    assert executor._spare is None


def test_spare_disabled_by_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSAGE_SPARE_AGENT", "0")
    executor = LocalExecutor()
    executor.submit(make_job(tmp_path, "first", ["true"]))
    assert executor._spare is None
