"""What every reconciler of agent-run jobs (training, processing, transform) shares: the pass over active jobs,
adoption after a restart, forwarding a stop, noticing a dead agent, reading every log line at a job's end, and
stopping agents at platform shutdown.

Subclasses provide ``_launch``, ``_ingest``, ``_conclude``, ``_stopped_before_start``, ``_fail(job, reason)``
and ``GONE_REASON``; everything they know about a running job is in its row, so nothing here is in memory
except a grace timer and the set of jobs already adopted.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from pathlib import Path

from opensage.credentials import CredentialAuthority, resource_owner
from opensage.executors.base import Executor
from opensage.runner.jobspec import JobResult, ObjectStoreSpec
from opensage.runner.loop import ReconcileLoop
from opensage.services.base import Deps
from opensage.store.resources import ConcurrentUpdate, Resource

log = logging.getLogger(__name__)

ACTIVE = ("InProgress", "Stopping")
# A dead agent may have written result.json just before we looked; re-check for this long before failing.
GONE_GRACE_SECONDS = 2.0
# Passes of ``_ingest`` at a job's end (each takes up to logtail.MAX_READ per file): a bound, not a budget.
MAX_DRAIN_PASSES = 1000
SHUTDOWN_REASON = ("InternalServerError: the OpenSage platform was shut down while the job was running. "
                   "Start the job again.")


class AgentJobReconciler(ReconcileLoop):
    KIND = ""
    GONE_REASON = ("InternalServerError: the job's process ended without reporting a result (it was killed, "
                   "or the host restarted while it ran). Start the job again.")

    def __init__(self, deps: Deps, executor: Executor, store_spec: ObjectStoreSpec, name: str,
                 credentials: CredentialAuthority | None = None) -> None:
        self.d = deps
        self.executor = executor
        self.store_spec = store_spec  # endpoint and region; never handed to a job with the platform's keys
        self.credentials = credentials
        self._init_loop(name, deps.settings.reconcile_interval, 5.0)
        subscribe = getattr(executor, "on_agent_exit", None)  # LocalExecutor: a job's end wakes this loop
        if subscribe is not None:
            subscribe(self.wake)
        self._gone_since: dict[str, float] = {}
        self._known: set[str] = set()

    # -- hooks ---------------------------------------------------------------------------------------
    def _launch(self, job: Resource) -> None:
        raise NotImplementedError

    def _ingest(self, job: Resource) -> Resource:
        raise NotImplementedError

    def _conclude(self, job: Resource, results: list[JobResult | None], platform_shutdown: bool) -> None:
        raise NotImplementedError

    def _stopped_before_start(self, job: Resource) -> None:
        raise NotImplementedError

    def _fail(self, job: Resource, reason: str) -> None:
        raise NotImplementedError

    # -- what a job gets -----------------------------------------------------------------------------
    def _job_store_spec(self, job: Resource) -> ObjectStoreSpec:
        """The object store as the job reaches it: with temporary credentials of its own (valid while the
        job's row is active), never the platform's key pair. The agent uses them for its transfers too, so
        the platform's secret is in no job file or environment."""
        if self.credentials is None:  # tests wiring a reconciler by hand, without an authority
            return dataclasses.replace(self.store_spec, access_key=None, secret_key=None, session_token=None)
        creds = self.credentials.issue(resource_owner(self.KIND, job.name, job.creation_time))
        return dataclasses.replace(self.store_spec, access_key=creds.access_key_id,
                                   secret_key=creds.secret_access_key, session_token=creds.session_token)

    # -- the shared lifecycle ------------------------------------------------------------------------
    def run_once(self) -> bool:
        jobs = self.d.resources.in_status(self.KIND, ACTIVE)
        for job in jobs:
            try:
                self._reconcile(job)
            except ConcurrentUpdate:
                continue  # a request changed the row; next pass sees the new version
            except Exception as e:
                log.exception("%s %s: reconcile failed", self.KIND, job.name)
                self._fail_internal(job, e)
        return bool(jobs)

    def shutdown(self, stop_jobs: bool = True, wait_seconds: float = 10.0) -> None:
        self._stop_loop()
        if not stop_jobs:
            return
        jobs = self.d.resources.in_status(self.KIND, ACTIVE)
        handles = [h for j in jobs for h in j.state.get("_handles", [])]
        for h in handles:
            self.executor.stop(h)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline and any(self.executor.is_running(h) for h in handles):
            time.sleep(0.1)
        for h in handles:
            if self.executor.is_running(h):
                self.executor.kill(h)
        for job in jobs:
            self._kill_leftovers(job.state.get("_handles", []), [Path(p) for p in job.state.get("_jobdirs", [])])
        for job in jobs:
            if "_handles" in job.state:
                try:
                    self._settle(job, platform_shutdown=True)
                except Exception:
                    log.exception("%s %s: could not settle at shutdown", self.KIND, job.name)

    def _reconcile(self, job: Resource) -> None:
        if "_handles" not in job.state:
            if job.status == "Stopping":
                self._stopped_before_start(job)
            else:
                self._launch(job)
            return
        self._settle(job)

    def _settle(self, job: Resource, platform_shutdown: bool = False) -> None:
        job = self._ingest(job)
        jobdirs = [Path(p) for p in job.state["_jobdirs"]]
        handles = job.state["_handles"]
        if job.name not in self._known:
            # First sight in this process: maybe started by an earlier control plane. Tell the executor
            # which job dir each handle belongs to, so a reused pid is not mistaken for our agent.
            self._known.add(job.name)
            adopt = getattr(self.executor, "adopt", None)
            if adopt is not None:
                for handle, jobdir in zip(handles, jobdirs, strict=True):
                    adopt(handle, jobdir)
        if job.status == "Stopping" and not job.state.get("_stop_sent"):
            for h in handles:
                self.executor.stop(h)
            job.state["_stop_sent"] = True
            job = self.d.resources.save(job, self.d.clock.time())
        results = [JobResult.read(d) for d in jobdirs]
        if all(r is not None for r in results):
            self._conclude(self._ingest_to_end(job), results, platform_shutdown)
            return
        alive = [self.executor.is_running(h) for h in handles]
        if any(r is None and not a for r, a in zip(results, alive, strict=True)):
            first = self._gone_since.setdefault(job.name, time.monotonic())
            if platform_shutdown or time.monotonic() - first > GONE_GRACE_SECONDS:
                self._gone_since.pop(job.name, None)
                for h, a in zip(handles, alive, strict=True):
                    if a:
                        self.executor.kill(h)
                self._kill_leftovers(handles, jobdirs)
                lost = [i for i, (r, a) in enumerate(zip(results, alive, strict=True)) if r is None and not a]
                self._hosts_lost(self._ingest_to_end(job), lost, platform_shutdown)

    def _end_agents_left_in(self, root: Path) -> None:
        """Before a launch deletes ``root``: a control plane killed between submitting this job's agents and
        saving their handles left the row saying "not launched" while the agents run in root's host
        directories. Deleting their files and starting second agents would run the job twice at once in the
        same directories (the old agent's result could conclude the new launch), so the executor ends them
        first (``end_agent_in``: the agent, what it started, waited for), and the launch starts afresh."""
        end = getattr(self.executor, "end_agent_in", None)
        if end is None or not root.is_dir():
            return
        ended = [d for d in sorted(p for p in root.iterdir() if p.is_dir()) if end(d)]
        if ended:
            log.warning("%s: ended %d agent(s) of an unrecorded launch still running in %s before the launch",
                        self.KIND, len(ended), root)

    def _ingest_to_end(self, job: Resource) -> Resource:
        """Every line the agents wrote, once all their results are in: an agent writes its result last, so
        what it logged after this pass's first ``_ingest`` (its final lines, a last metric) and what one pass
        does not take (``logtail.MAX_READ`` per file) is read now, before the job is concluded."""
        for _ in range(MAX_DRAIN_PASSES):
            before = copy.deepcopy(job.state)
            job = self._ingest(job)
            if job.state == before:
                break
        return job

    def _hosts_lost(self, job: Resource, lost: list[int], platform_shutdown: bool) -> None:
        """Hosts (indexes) whose agent ended without a result; every other host is already killed. The job
        fails; training overrides this (spot interruptions resume, RetryStrategy retries)."""
        self._fail(job, SHUTDOWN_REASON if platform_shutdown else self.GONE_REASON)

    def _kill_leftovers(self, handles: list[str], jobdirs: list[Path]) -> None:
        """A dead agent leaves the user's processes running: end them with the job (executor permitting)."""
        kill_job = getattr(self.executor, "kill_job", None)
        if kill_job is None:
            return
        for handle, jobdir in zip(handles, jobdirs, strict=False):
            try:
                killed = kill_job(handle, jobdir)
            except Exception:  # noqa: BLE001 - never keeps the job from being concluded
                log.exception("%s: could not kill the processes left in %s", self.KIND, jobdir)
                continue
            if killed:
                log.warning("%s: killed %d process(es) a dead agent left in %s", self.KIND, killed, jobdir)

    def _fail_internal(self, job: Resource, err: Exception) -> None:
        fresh = self.d.resources.get(self.KIND, job.name)
        if fresh is None or fresh.status not in ACTIVE:
            return
        for h in fresh.state.get("_handles", []):
            self.executor.kill(h)
        self._kill_leftovers(fresh.state.get("_handles", []), [Path(p) for p in fresh.state.get("_jobdirs", [])])
        try:
            self._fail(fresh, f"InternalServerError: {type(err).__name__}: {err}")
        except Exception:
            log.exception("could not mark %s %s failed", self.KIND, job.name)
