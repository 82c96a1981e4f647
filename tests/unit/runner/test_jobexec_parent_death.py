"""jobexec's parent-death signal: a job's command dies with its agent, a model server outlives the thread
that spawned it (PR_SET_PDEATHSIG follows the spawning *thread*; replicas must survive a control-plane
restart to be adopted)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from opensage.runner.sandbox import JOBEXEC

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _spawn_from_a_thread(extra: list[str]) -> subprocess.Popen:
    """Start ``jobexec [extra] -- sleep 30`` from a thread that ends right after; return its Popen.

    The caller keeps the Popen and polls it: a Popen dropped while its process runs joins subprocess's
    ``_active`` list, and any later Popen in the worker (another test's leftover thread) reaps it, so a bare
    ``os.waitpid`` on the pid fails with ECHILD (seen in CI)."""
    started: list[subprocess.Popen] = []

    def spawn() -> None:
        started.append(subprocess.Popen([sys.executable, "-I", JOBEXEC, *extra, "--", "sleep", "30"]))
        time.sleep(0.5)  # jobexec arms (or not) the signal, then execs sleep

    worker = threading.Thread(target=spawn)
    worker.start()
    worker.join()
    return started[0]


def _alive_after(proc: subprocess.Popen, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return True


def test_jobexec_command_dies_with_the_thread_that_spawned_it():
    proc = _spawn_from_a_thread([])
    assert not _alive_after(proc, 3)


def test_jobexec_outlive_parent_survives_the_spawning_thread():
    proc = _spawn_from_a_thread(["--outlive-parent"])
    try:
        assert _alive_after(proc, 1.5)
        assert proc.returncode is None
    finally:
        proc.kill()
        proc.wait()
