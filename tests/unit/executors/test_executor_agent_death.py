"""Issue 7 item 10: a job's user processes do not outlive its SIGKILLed agent."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from opensage.executors.local import LocalExecutor
from opensage.runner.jobspec import JobSpec, ObjectStoreSpec
from opensage.runner.sandbox import namespace_supported, pick_job_uid

# The script starts a child that leaves the process group (setsid), then both sleep; pids go to a file.
SLEEPER = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    with open(os.path.join(os.environ["SAGEMAKER_BASE_DIR"], "model", "pids"),
              "w") as fh:
        fh.write(f"{os.getpid()} {child.pid}")
    time.sleep(120)
""")


def _job(tmp_path: Path, uid: int | None) -> Path:
    (tmp_path / "store" / "bkt").mkdir(parents=True)
    jobdir = tmp_path / "job"
    jobdir.mkdir()
    JobSpec(job_name="j", job_arn="arn:j", kind="training", command=[sys.executable, "-c", SLEEPER],
            environment={}, channels=[], object_store=ObjectStoreSpec(f"file://{tmp_path / 'store'}"),
            run_as_uid=uid).write(jobdir)
    return jobdir


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.mark.parametrize("own_user", [False, True])
def test_kill_job_agent_sigkilled_user_processes_gone(tmp_path: Path, own_user: bool) -> None:
    if own_user and not namespace_supported():
        pytest.skip("a job user of its own needs root")
    jobdir = _job(tmp_path, pick_job_uid() if own_user else None)
    executor = LocalExecutor()
    handle = executor.submit(jobdir)
    pids_file = jobdir / "ml" / "model" / "pids"
    _wait(lambda: pids_file.is_file() and len(pids_file.read_text().split()) == 2)
    script, child = (int(p) for p in pids_file.read_text().split())
    assert _alive(script) and _alive(child)

    os.kill(int(handle), signal.SIGKILL)  # the agent dies; the reconciler sees it gone
    _wait(lambda: not executor.is_running(handle))
    executor.kill_job(handle, jobdir)

    _wait(lambda: not _alive(script) and not _alive(child), timeout=5)
