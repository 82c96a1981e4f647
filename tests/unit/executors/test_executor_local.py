from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from opensage.executors.local import LocalExecutor, process_alive
from opensage.runner.jobspec import JobResult, JobSpec, ObjectStoreSpec


def make_job(tmp_path: Path, command: list[str]) -> Path:
    (tmp_path / "store" / "bkt").mkdir(parents=True)
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    JobSpec(job_name="j", job_arn="arn:j", kind="training", command=command, environment={}, channels=[],
            object_store=ObjectStoreSpec(f"file://{tmp_path / 'store'}"), stop_grace_seconds=2).write(jobdir)
    return jobdir


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_is_running_pid_of_non_agent_process_false() -> None:
    assert not LocalExecutor().is_running(str(os.getpid()))
    assert not process_alive(0)
    assert not process_alive(2**22 + 12345)


def test_is_running_zombie_not_counted_as_running(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass", "opensage.runner.agent"])
    wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")
    assert not process_alive(proc.pid)
    proc.wait()


def test_submit_finished_job_reaped_and_result_written(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["true"])
    executor = LocalExecutor()
    handle = executor.submit(jobdir)
    wait_for(lambda: not executor.is_running(handle))
    assert not Path(f"/proc/{handle}").exists()  # reaped, no zombie left
    result = JobResult.read(jobdir)
    assert result is not None and result.exit_code == 0
    assert "job agent done" in (jobdir / "agent.log").read_text()


def test_kill_ends_agent_and_its_command_without_result(tmp_path: Path) -> None:
    jobdir = make_job(tmp_path, ["sh", "-c", "echo $$ > child.pid; sleep 30"])
    executor = LocalExecutor()
    handle = executor.submit(jobdir)
    child_pid_file = jobdir / "ml" / "code" / "child.pid"
    wait_for(lambda: child_pid_file.exists() and child_pid_file.read_text().strip() != "")
    executor.kill(handle)
    wait_for(lambda: not executor.is_running(handle))
    assert JobResult.read(jobdir) is None
    child = child_pid_file.read_text().strip()
    # In the namespace sandbox $$ is the shell's pid as well (exec chain): it must be gone too.
    wait_for(lambda: not Path(f"/proc/{child}").exists()
             or Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_stop_unknown_or_finished_handle_is_a_no_op(tmp_path: Path) -> None:
    executor = LocalExecutor()
    executor.stop(str(os.getpid()))  # not an agent: must not signal ourselves
    executor.kill("999999999")


def test_agent_exit_calls_listener_after_result_written_and_process_reaped(tmp_path: Path) -> None:
    """A reconciler's wake runs when the agent exits (its result.json already there): the end is seen at once,
    not at the next 0.2 s poll. The agent is reaped by the watcher (no zombie); is_running agrees."""
    import threading

    jobdir = make_job(tmp_path, ["true"])
    executor = LocalExecutor()
    woken = threading.Event()
    seen: list[bool] = []
    executor.on_agent_exit(lambda: (seen.append(JobResult.read(jobdir) is not None), woken.set()))
    handle = executor.submit(jobdir)
    assert woken.wait(30), "the listener was never called"
    assert seen == [True]
    assert not executor.is_running(handle)
    assert not Path(f"/proc/{handle}").exists()
