"""Executor protocol: how the control plane starts, watches and stops a job's agent process.

An executor runs ``python -m opensage.runner.agent <jobdir>`` somewhere; all results come back through
files in the job directory (see ``opensage.runner.jobspec``). The handle is an opaque string that the
control plane stores, so a restarted control plane can adopt running jobs.

Optional methods, looked up with ``getattr`` by the reconcilers (``runner/agentjobs.py``): ``adopt(handle,
jobdir)``, ``kill_job(handle, jobdir) -> int`` (what a dead agent left), ``end_agent_in(jobdir) -> bool`` (an
agent no handle was recorded for: a control plane killed between a submit and saving its handle).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Executor(Protocol):
    def submit(self, jobdir: Path) -> str:
        """Start the agent for ``jobdir`` (jobspec.json already written); returns a handle."""
        ...

    def is_running(self, handle: str) -> bool:
        """True while the agent behind ``handle`` is alive (works for handles from an earlier process)."""
        ...

    def stop(self, handle: str) -> None:
        """Ask the agent to stop (SIGTERM); it forwards to the job and honours the grace period."""
        ...

    def kill(self, handle: str) -> None:
        """End the agent and everything it started, now."""
        ...
