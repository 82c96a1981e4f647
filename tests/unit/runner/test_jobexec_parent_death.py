"""jobexec's parent-death signal: a job's command dies with its agent, a model server outlives the thread
that spawned it (PR_SET_PDEATHSIG follows the spawning *thread*; replicas must survive a control-plane
restart to be adopted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from opensage.runner.sandbox import JOBEXEC

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _spawn_from_a_thread(extra: list[str]) -> int:
    """Start ``jobexec [extra] -- sleep 30`` from a thread that ends right after; return its pid."""
    started: list[subprocess.Popen] = []

    def spawn() -> None:
        started.append(subprocess.Popen([sys.executable, "-I", JOBEXEC, *extra, "--", "sleep", "30"]))
        time.sleep(0.5)  # jobexec arms (or not) the signal, then execs sleep

    worker = threading.Thread(target=spawn)
    worker.start()
    worker.join()
    return started[0].pid


def _alive_after(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
        time.sleep(0.05)
    return True


def test_jobexec_command_dies_with_the_thread_that_spawned_it():
    pid = _spawn_from_a_thread([])
    assert not _alive_after(pid, 3)


def test_jobexec_outlive_parent_survives_the_spawning_thread():
    pid = _spawn_from_a_thread(["--outlive-parent"])
    try:
        assert _alive_after(pid, 1.5)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
