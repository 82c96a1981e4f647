"""The spare agent: a pre-started agent process that takes the next job (executors/local.py), started when
an agent exits, or at a submit when jobs come back to back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from opensage.executors import local
from opensage.executors.local import LocalExecutor, can_leave_idle_priority, process_alive
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


def first_job_done_and_spare_started(executor, root: Path) -> None:  # type: ignore[no-untyped-def]
    handle = executor.submit(make_job(root, "first", ["true"]))
    wait_for(lambda: not executor.is_running(handle) and executor._spare is not None)


def test_submit_second_job_runs_in_spare_agent_logging_to_its_own_dir(tmp_path: Path, executor) -> None:
    first = tmp_path / "first"
    first_job_done_and_spare_started(executor, tmp_path)
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
    first_job_done_and_spare_started(executor, tmp_path)
    spare = executor._spare[0]
    monkeypatch.setenv("OPENSAGE_SPARE_TEST_SETTING", "changed")  # an agent must see the current environment
    handle = executor.submit(make_job(tmp_path, "second", ["true"]))
    assert b"--spare" not in cmdline(handle)
    wait_for(lambda: spare.poll() is not None)  # the stale spare ended, having run no job
    assert not (tmp_path / "second" / "agent.log").read_text().count("job agent done") > 1


def test_close_ends_idle_spare_without_a_job(tmp_path: Path) -> None:
    executor = LocalExecutor()
    first_job_done_and_spare_started(executor, tmp_path)
    spare = executor._spare[0]
    executor.close()
    assert spare.poll() == 0  # exited on its own when its stdin closed
    assert executor._spare is None
    executor._start_spare({})  # an agent exiting after close() starts no spare that nothing would end
    assert executor._spare is None


def test_spare_starts_when_an_agent_exits_not_beside_a_running_job(tmp_path: Path, executor) -> None:
    running = executor.submit(make_job(tmp_path, "first", ["sh", "-c", "sleep 1.5"]))
    time.sleep(0.5)
    assert executor.is_running(running) and executor._spare is None  # the job has the machine to itself
    wait_for(lambda: executor._spare is not None)
    assert not executor.is_running(running)
    spare = executor._spare[0]
    if can_leave_idle_priority():  # root with CAP_SYS_NICE: idle until it has a job, then normal
        assert os.sched_getscheduler(spare.pid) == os.SCHED_IDLE
    second = make_job(tmp_path, "second", ["sh", "-c", "sleep 1"])
    handle = executor.submit(second)
    assert handle == str(spare.pid)
    wait_for(lambda: (second / "agent.pid").exists())
    threads = [int(tid) for tid in os.listdir(f"/proc/{handle}/task")]
    assert all(os.sched_getscheduler(tid) == os.SCHED_OTHER for tid in threads)
    wait_for(lambda: not executor.is_running(handle))
    result = JobResult.read(second)
    assert result is not None and result.exit_code == 0


def test_spare_disabled_by_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENSAGE_SPARE_AGENT", "0")
    executor = LocalExecutor()
    handle = executor.submit(make_job(tmp_path, "first", ["true"]))
    wait_for(lambda: not executor.is_running(handle))
    time.sleep(0.2)
    assert executor._spare is None


def test_spare_starts_at_a_submit_beside_a_running_job(tmp_path: Path, executor) -> None:
    running = executor.submit(make_job(tmp_path, "first", ["sh", "-c", "sleep 1.5"]))
    assert executor._spare is None
    executor.submit(make_job(tmp_path, "second", ["sh", "-c", "sleep 1.5"]))
    assert executor.is_running(running)
    assert executor._spare is not None  # jobs come faster than one at a time: the third finds it loaded


def test_spare_starts_at_a_submit_right_after_an_agent_exit(tmp_path: Path, executor,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "BACK_TO_BACK_SECONDS", 3600.0)  # every submit counts as "right after"
    first_job_done_and_spare_started(executor, tmp_path)
    spare = executor._spare[0]
    handle = executor.submit(make_job(tmp_path, "second", ["true"]))
    assert handle == str(spare.pid)
    assert executor._spare is not None and executor._spare[0] is not spare
