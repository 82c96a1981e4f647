"""A training job's host lost mid-job (issue 13 item 4): spot interruptions, RetryStrategy, MaxWaitTimeInSeconds,
and the operator's injected interruption (``opensage interrupt training-job NAME``).

A host is lost when its agent ends without a result (the node died, the process was killed), or when an
operator asks for it: ``opensage interrupt`` writes ``<jobs dir>/<job>/interrupt-request.json`` and the
reconciler — the only one that talks to the executor, local or a cluster — kills that host's agent. Then
every other host of the job is ended too (as SageMaker reclaims a spot job's instances together) and:

* ``EnableManagedSpotTraining``: SecondaryStatus ``Interrupted`` then ``Restarting``; every host starts again
  from the job's checkpoints (CheckpointConfig.S3Uri, which the agents keep in sync while the job runs and
  download at start), as often as it takes, within ``StoppingCondition.MaxWaitTimeInSeconds`` counted from the
  job's creation (then Stopped / ``MaxWaitTimeExceeded``);
* otherwise, ``RetryStrategy.MaximumRetryAttempts`` (SageMaker retries a job that failed with an
  InternalServerError; a lost host is one) restarts it the same way, SecondaryStatus ``Restarting``;
* else the job fails, its FailureReason naming the lost host.

``BillableTimeInSeconds`` is the time the hosts ran (every attempt's run, not the gaps between them), so it is
at most ``TrainingTimeInSeconds`` (from the first start to the end). Each attempt gets what is left of
MaxRuntimeInSeconds.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from opensage.runner.jobspec import JobResult
from opensage.services.training import close_transition, resolve_image
from opensage.store.resources import Resource

log = logging.getLogger(__name__)

INTERRUPT_REQUEST = "interrupt-request.json"


def interrupt_request_path(jobs_dir: Path, job_name: str) -> Path:
    return jobs_dir / job_name / INTERRUPT_REQUEST


def request_interrupt(jobs_dir: Path, job_name: str, host: str | None) -> Path:
    """What ``opensage interrupt`` does: ask the training reconciler to lose ``host`` (default: the last one)."""
    path = interrupt_request_path(jobs_dir, job_name)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"training job {job_name} has no job directory under {jobs_dir}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"host": host}))
    tmp.replace(path)
    return path


def remaining_runtime(request: dict[str, Any], state: dict[str, Any]) -> int | None:
    """MaxRuntimeInSeconds less what earlier attempts already ran."""
    limit = (request.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    if not limit:
        return None
    return max(1, int(limit) - int(state.get("_billable") or 0))


def billable_seconds(state: dict[str, Any], now: float) -> float:
    running = now - state["_attempt_started"] if state.get("_attempt_started") else 0.0
    return float(state.get("_billable") or 0.0) + max(0.0, running)


def _spot(job: Resource) -> bool:
    return bool(job.request.get("EnableManagedSpotTraining"))


def _max_wait(job: Resource) -> float | None:
    value = (job.request.get("StoppingCondition") or {}).get("MaxWaitTimeInSeconds")
    return float(value) if value and _spot(job) else None


class InterruptionsMixin:
    """Mixed into the TrainingReconciler (which provides d, executor, _ingest, _fail, _finish, _start_hosts,
    _kill_leftovers, _gone_since)."""

    d: Any
    executor: Any
    _gone_since: dict[str, float]

    # -- each pass ---------------------------------------------------------------------------------
    def _settle(self, job: Resource, platform_shutdown: bool = False) -> None:
        if not platform_shutdown and job.status == "InProgress":
            host = self._take_interrupt_request(job)
            if host is not None:
                job = self._ingest(job)  # type: ignore[attr-defined]
                self._lose_host(job, host)
                return
            job = self._check_max_wait(job)
            job = self._stop_peers_of_failed_host(job)
        super()._settle(job, platform_shutdown)  # type: ignore[misc]

    def _stop_peers_of_failed_host(self, job: Resource) -> Resource:
        """One host failed while the others still run: stop them (they would wait on it in a collective or a
        rendezvous until their timeouts), as SageMaker ends a job when one of its hosts fails."""
        st = job.state
        jobdirs = [Path(p) for p in st.get("_jobdirs") or []]
        if len(jobdirs) < 2 or st.get("_peers_stopped"):
            return job
        results = [JobResult.read(d) for d in jobdirs]
        failed = any(r and not (r.stopped or r.max_runtime_exceeded) and (r.exit_code != 0 or r.failure_reason)
                     for r in results)
        if not failed or all(r is not None for r in results):
            return job
        for handle, result in zip(st["_handles"], results, strict=True):
            if result is None:
                self.executor.stop(handle)
        st["_peers_stopped"] = True
        log.info("training job %s: a host failed; stopping the others", job.name)
        return self.d.resources.save(job, self.d.clock.time())

    def _take_interrupt_request(self, job: Resource) -> int | None:
        path = interrupt_request_path(self.d.settings.jobs_dir, job.name)
        if not path.is_file():
            return None
        try:
            wanted = json.loads(path.read_text()).get("host")
        except (OSError, ValueError, AttributeError):
            wanted = None
        path.unlink(missing_ok=True)
        count = len(job.state.get("_handles") or [])
        if count == 0:
            return None
        names = [f"algo-{i + 1}" for i in range(count)]
        if wanted not in names:
            if wanted:
                log.warning("training job %s: no host %r to interrupt; interrupting %s", job.name, wanted,
                            names[-1])
            wanted = names[-1]
        return names.index(wanted)

    def _lose_host(self, job: Resource, index: int) -> None:
        """The operator's interruption: that host's agent is killed (the node is gone), then the others."""
        handles = job.state["_handles"]
        jobdirs = [Path(p) for p in job.state["_jobdirs"]]
        for h in handles:
            self.executor.kill(h)
        self._kill_leftovers(handles, jobdirs)  # type: ignore[attr-defined]
        log.info("training job %s: algo-%d interrupted by the operator", job.name, index + 1)
        self._hosts_lost(job, [index], False, cause="interrupted by the operator (opensage interrupt)")

    def _check_max_wait(self, job: Resource) -> Resource:
        limit = _max_wait(job)
        if limit is None or job.state.get("_max_wait_exceeded"):
            return job
        if self.d.clock.time() - float(job.creation_time) <= limit:
            return job
        for h in job.state.get("_handles") or []:
            self.executor.stop(h)
        job.state["_max_wait_exceeded"] = True
        return self.d.resources.save(job, self.d.clock.time())

    # -- a host is gone --------------------------------------------------------------------------------
    def _hosts_lost(self, job: Resource, lost: list[int], platform_shutdown: bool,
                    cause: str = "its process ended without reporting a result: it was killed, or its node "
                                 "went down") -> None:
        if platform_shutdown:
            super()._hosts_lost(job, lost, platform_shutdown)  # type: ignore[misc]
            return
        hosts = ", ".join(f"algo-{i + 1}" for i in lost)
        what = f"host {hosts} was lost while the job ran ({cause})"
        self._restart_or_fail(job, f"InternalServerError: {what[0].upper()}{what[1:]}. Start the job again, or "
                                   f"let it resume from its checkpoints (EnableManagedSpotTraining) or be retried "
                                   f"(RetryStrategy).", what)

    def _restart_or_fail(self, job: Resource, reason: str, what: str) -> None:
        """Spot: Interrupted -> Restarting; RetryStrategy: Restarting while attempts are left; else Failed."""
        now = self.d.clock.time()
        st = job.state
        st["_billable"] = billable_seconds(st, now)
        st.pop("_attempt_started", None)
        if _spot(job):
            limit = _max_wait(job)
            if limit is not None and now - float(job.creation_time) > limit:
                self._finish(job, "Stopped", "MaxWaitTimeExceeded",  # type: ignore[attr-defined]
                             "Training job interrupted and its MaxWaitTimeInSeconds has passed.", None)
                return
            st["_interruptions"] = int(st.get("_interruptions") or 0) + 1
            self._record(job, now, "Interrupted", f"Training job interrupted: {what}.")
            self._record(job, now, "Restarting",
                         f"Restarting the training job from its last checkpoint "
                         f"(interruption {st['_interruptions']}).")
        else:
            allowed = int((job.request.get("RetryStrategy") or {}).get("MaximumRetryAttempts") or 0)
            done = int(st.get("_retries") or 0)
            if done >= allowed:
                self._fail(job, reason)  # type: ignore[attr-defined]
                return
            st["_retries"] = done + 1
            self._record(job, now, "Restarting",
                         f"Retrying the training job (retry {done + 1} of {allowed}) after an "
                         f"InternalServerError: {what}.")
        self._gone_since.pop(job.name, None)
        self._start_hosts(job, resolve_image(job.request), first=False)  # type: ignore[attr-defined]

    def _retry_after_result(self, job: Resource, results: list[JobResult | None]) -> bool:
        """An agent that reported an InternalServerError (not the user's code) is retried like a lost host."""
        failed = next((r for r in results if r and r.failure_reason
                       and r.failure_reason.startswith("InternalServerError")), None)
        if failed is None or job.status != "InProgress" or job.state.get("_max_wait_exceeded"):
            return False
        allowed = int((job.request.get("RetryStrategy") or {}).get("MaximumRetryAttempts") or 0)
        if int(job.state.get("_retries") or 0) >= allowed:
            return False
        self._restart_or_fail(job, failed.failure_reason or "", failed.failure_reason or "")
        return True

    def _record(self, job: Resource, now: float, status: str, message: str) -> None:
        st = job.state
        transitions = close_transition(st.get("SecondaryStatusTransitions", []), now)
        transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
        st["SecondaryStatusTransitions"], st["SecondaryStatus"] = transitions, status
