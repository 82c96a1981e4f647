"""Runs job agents as subprocesses of this machine (each in its own session / process group).

A spare agent (``python -m opensage.runner.agent --spare``) is started when a job's agent exits: it imports
the agent and boto3 and loads botocore's S3 data, then waits on its stdin for the next job directory, so a job
starts without an interpreter start and those imports (~0.3 s measured, benchmarks/RESULTS.md "Training
start"). It holds nothing of any job until it is given one, and is used only while the environment it was
started with is still the one an agent would get; it exits when its stdin closes (this process ended).

When: the spare's start costs ~0.65 s of CPU (interpreter, boto3, botocore's data). Started beside the job
just submitted (as first built) it took that from the job's first second on a 2-core machine, even at
SCHED_IDLE (linear-learner's solve 0.31-0.34 s with no spare starting, 0.43-0.62 s with one); started only at
an agent's exit, jobs submitted back to back (a pipeline's steps, a tuner's next job, a loop) found it still
loading (first line of a script job 0.29 -> 0.82 s). So a job submitted alone (no agent running, none ended in
the last ``BACK_TO_BACK_SECONDS``) gets its successor's spare when its agent exits; a job submitted while
others run or right after one ended gets it at once, loaded by the time the next comes. The spare runs at
SCHED_IDLE where it can leave that class again (``can_leave_idle_priority``), returning to normal scheduling
when it is given a job: beside jobs still running it uses only CPU they leave.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

AGENT_MODULE = "opensage.runner.agent"
SPARE_FLAG = "--spare"
SPARE_ENV = "OPENSAGE_SPARE_AGENT"  # "0": every agent is a fresh process
CAP_SYS_NICE = 23  # linux/capability.h
# A submit this soon after an agent's exit is taken for jobs coming back to back: the next spare starts at once
# (a spare loads in ~0.5 s; a tuner or a pipeline submits its next job within a few polls of the last's end).
BACK_TO_BACK_SECONDS = 0.5


def spare_enabled() -> bool:
    return os.environ.get(SPARE_ENV, "1").lower() not in ("0", "false", "no", "off")


def can_leave_idle_priority() -> bool:
    """Whether a thread of this process may go back from SCHED_IDLE to normal scheduling. That needs
    CAP_SYS_NICE (sched(7): an unprivileged thread may leave SCHED_IDLE only as far as RLIMIT_NICE allows,
    by default not at all; root in a container may lack the capability), and a job must never run at idle
    priority, so a spare is put there only when this holds."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_NICE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def set_scheduling(tid: int, idle: bool) -> bool:
    """Put thread ``tid`` (0: the calling one; a process's pid: its main thread) at SCHED_IDLE or back to
    SCHED_OTHER; threads it starts afterwards inherit the class. False where the kernel refused."""
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE if idle else os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):
        return False
    return True


class LocalExecutor:
    """Handle = the agent's pid (also its process-group id)."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._jobdirs: dict[int, str] = {}
        self._spare: tuple[subprocess.Popen[bytes], dict[str, str]] | None = None
        self._spare_lock = threading.Lock()
        self._spare_idle = can_leave_idle_priority()
        self._closed = False
        self._last_exit = -float("inf")  # time.monotonic() of the last agent exit seen
        self._exit_listeners: list[Callable[[], None]] = []

    def on_agent_exit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (a reconciler's ``wake``) when an agent this executor started exits: the job's
        result.json is written by then, so its end is seen at once instead of at the next poll (0.2 s)."""
        self._exit_listeners.append(listener)

    def submit(self, jobdir: Path) -> str:
        self._reap()  # finished agents of earlier jobs are never polled again once their result is read
        jobdir = Path(jobdir).resolve()
        env = agent_env()
        proc = self._hand_to_spare(jobdir, env)
        if proc is None:
            with open(jobdir / "agent.log", "ab") as log:
                proc = subprocess.Popen(
                    [self.python, "-m", AGENT_MODULE, str(jobdir)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    cwd=jobdir,
                    env=env,
                )
        self._children[proc.pid] = proc
        self._jobdirs[proc.pid] = str(jobdir)
        self._watch(proc)
        if self._back_to_back(proc):
            self._start_spare(env)
        return str(proc.pid)

    def _back_to_back(self, submitted: subprocess.Popen[bytes]) -> bool:
        """Whether jobs are coming faster than a spare loads after an agent's exit: another agent is running, or
        one exited in the last ``BACK_TO_BACK_SECONDS`` (see the module doc)."""
        if time.monotonic() - self._last_exit < BACK_TO_BACK_SECONDS:
            return True
        return any(proc is not submitted and proc.poll() is None for proc in list(self._children.values()))

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """On the agent's exit: wake the listeners, then start a spare for the next job (if none is there)."""
        if not self._exit_listeners and not spare_enabled():
            return

        def wait() -> None:
            try:  # meanwhile poll() elsewhere answers "running" (Popen's waitpid lock is held here), as it is
                proc.wait()
            except Exception:  # noqa: BLE001 - nothing to tell; the reconciler's poll still sees the end
                return
            self._last_exit = time.monotonic()
            for listener in list(self._exit_listeners):
                try:
                    listener()
                except Exception:  # noqa: BLE001 - a listener only wakes a loop
                    pass
            self._start_spare(agent_env())

        threading.Thread(target=wait, name=f"agent-exit-{proc.pid}", daemon=True).start()

    # -- the spare agent ---------------------------------------------------------------------------
    def _hand_to_spare(self, jobdir: Path, env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        with self._spare_lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        proc, spare_env = spare
        if proc.poll() is None and spare_env == env:
            try:
                assert proc.stdin is not None
                proc.stdin.write(os.fsencode(jobdir) + b"\n")
                proc.stdin.close()
                return proc
            except OSError:
                pass
        _discard(proc)
        return None

    def _start_spare(self, env: dict[str, str]) -> None:
        if not spare_enabled():
            return
        with self._spare_lock:
            if self._spare is not None or self._closed:
                return
            try:
                proc = subprocess.Popen(
                    [self.python, "-m", AGENT_MODULE, SPARE_FLAG],
                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    start_new_session=True, close_fds=True, cwd="/", env=env)
            except OSError:
                return  # the next job starts a fresh agent, as without a spare
            if self._spare_idle:  # at once, before its interpreter starts the preload thread (which inherits it)
                set_scheduling(proc.pid, idle=True)
            self._spare = (proc, env)

    def close(self) -> None:
        """End the idle spare agent (running agents are left alone: they outlive the control plane)."""
        with self._spare_lock:
            spare, self._spare = self._spare, None
            self._closed = True
        if spare is not None:
            _discard(spare[0])

    def adopt(self, handle: str, jobdir: Path) -> None:
        """Remember the job directory of a handle from an earlier control plane (stronger pid-reuse check)."""
        self._jobdirs[int(handle)] = str(Path(jobdir).resolve())

    def find_agent(self, jobdir: Path) -> str | None:
        """The handle of a live agent working in ``jobdir``, whoever started it (None: there is none).

        For an agent a control plane submitted and died before recording: its ``agent.pid``, else (it had not
        written one yet) a scan of /proc for the agent naming ``jobdir`` on its command line or, a spare, as
        its working directory."""
        jobdir_s = str(Path(jobdir).resolve())
        pid = recorded_agent(jobdir_s)
        if pid is not None:
            return str(pid)
        try:
            pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
        except OSError:
            return None
        return next((str(p) for p in pids if p != os.getpid() and process_alive(p, jobdir_s)), None)

    def end_agent_in(self, jobdir: Path, wait: float = 10.0) -> bool:
        """End the live agent working in ``jobdir`` whoever started it (``find_agent``), with what it
        started, waiting up to ``wait`` s for it to be gone; False if there was none."""
        handle = self.find_agent(jobdir)
        if handle is None:
            return False
        self.adopt(handle, jobdir)  # is_running checks the pid against the job dir from now on
        self.kill_job(handle, jobdir)  # the agent's group and the job's user
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.is_running(handle):
            time.sleep(0.05)
        return True

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
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:  # a spare just handed its job leads no group yet: itself then
                    os.kill(pid, sig)
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


def _discard(proc: subprocess.Popen[bytes]) -> None:
    """End an idle spare (it has no job): closing its stdin makes it exit; SIGKILL if it does not at once."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=2)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()


def recorded_agent(jobdir: str) -> int | None:
    """The pid in ``<jobdir>/agent.pid`` if that agent still runs in ``jobdir`` (checked in /proc), else None."""
    try:
        pid = int((Path(jobdir) / "agent.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid, str(Path(jobdir).resolve())) else None


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
    if jobdir is None or any(jobdir.encode() == a for a in cmdline):
        return True
    # A spare agent names no job dir on its command line: it works in it (chdir before anything else).
    try:
        return SPARE_FLAG.encode() in cmdline and os.readlink(f"/proc/{pid}/cwd") == jobdir
    except OSError:
        return False
