"""Runs job agents as subprocesses of this machine (each in its own session / process group)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

AGENT_MODULE = "opensage.runner.agent"


class LocalExecutor:
    """Handle = the agent's pid (also its process-group id)."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._jobdirs: dict[int, str] = {}

    def submit(self, jobdir: Path) -> str:
        self._reap()  # finished agents of earlier jobs are never polled again once their result is read
        jobdir = Path(jobdir).resolve()
        with open(jobdir / "agent.log", "ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", AGENT_MODULE, str(jobdir)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd=jobdir,
                env=agent_env(),
            )
        self._children[proc.pid] = proc
        self._jobdirs[proc.pid] = str(jobdir)
        return str(proc.pid)

    def adopt(self, handle: str, jobdir: Path) -> None:
        """Remember the job directory of a handle from an earlier control plane (stronger pid-reuse check)."""
        self._jobdirs[int(handle)] = str(Path(jobdir).resolve())

    def kill_job(self, handle: str, jobdir: Path) -> int:
        """Kill what is left of a job whose agent is gone (or going): the agent's group and the job's user.

        The user's processes outlive a SIGKILLed agent (PDEATHSIG covers only the command's first process;
        a child that called setsid leaves the group). Pid reuse: a process is the job's when it runs as the
        job's own uid (jobspec) or carries the job's marker in its environment, never by pid alone.
        """
        from opensage.runner.jobspec import JobSpec
        from opensage.runner.sandbox import job_marker, job_uid, kill_job_processes

        jobdir = Path(jobdir).resolve()
        try:
            uid = job_uid(JobSpec.read(jobdir).run_as_uid)
        except (OSError, ValueError, TypeError, KeyError):
            uid = None
        if self.is_running(handle):  # the agent itself (verified against the job dir): the whole group
            self._signal(handle, signal.SIGKILL, group=True)
        return kill_job_processes(uid, job_marker(jobdir / "ml"))

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def is_running(self, handle: str) -> bool:
        pid = int(handle)
        self._reap()
        own = self._children.get(pid)
        if own is not None:
            return own.poll() is None  # our child: poll() also reaps it once it has exited
        return process_alive(pid, self._jobdirs.get(pid))

    def stop(self, handle: str) -> None:
        self._signal(handle, signal.SIGTERM, group=False)

    def kill(self, handle: str) -> None:
        self._signal(handle, signal.SIGKILL, group=True)
        self._reap()

    def _signal(self, handle: str, sig: int, group: bool) -> None:
        pid = int(handle)
        if not self.is_running(handle):
            return
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass


def agent_env() -> dict[str, str]:
    """This environment, with the directory holding the ``opensage`` package first on PYTHONPATH."""
    import opensage
    from opensage.runner.sandbox import PLATFORM_CLIENT_ENV

    root = str(Path(opensage.__file__).resolve().parents[1])
    # The agent transfers with the job's own credentials (jobspec.json); the platform's client profile
    # and key pair stay out of everything a job's process tree inherits.
    env = {k: v for k, v in os.environ.items() if k not in PLATFORM_CLIENT_ENV}
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ..." - comm may contain spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[0]


def process_alive(pid: int, jobdir: str | None = None) -> bool:
    """True if ``pid`` is a live (not zombie) job agent and, when known, its command line names ``jobdir``.

    Works for processes this control plane did not start (adopted after a restart). Without /proc
    (not Linux) it falls back to ``kill(pid, 0)``.
    """
    if pid <= 0:
        return False
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if AGENT_MODULE.encode() not in cmdline:
        return False  # the pid was reused by something else
    return jobdir is None or any(jobdir.encode() == a for a in cmdline)
