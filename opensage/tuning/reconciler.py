"""The tuning reconciler: the only writer of a tuning job's progress. One pass per InProgress / Stopping job:

1. read the child training jobs (the source of truth) and bring the in-memory study up to date with them
   (rebuilt from the rows after a restart: finished trials are never run again);
2. report new intermediate objective values of running children to the pruner (Hyperband, early stopping
   Auto) and stop those it prunes;
3. decide whether the job is done (Stop asked, MaxRuntimeInSeconds, completion criteria, budget spent);
4. otherwise launch children (retries of failed ones first) up to MaxParallelTrainingJobs, through the
   training service's own CreateTrainingJob.

Children are created and stopped only through ``ctx.services["training"]`` (never its rows).
"""

from __future__ import annotations

import logging
from typing import Any

from opensage.api.dispatch import RequestContext
from opensage.errors import ServiceError
from opensage.runner.loop import ReconcileLoop
from opensage.services.base import Deps
from opensage.states import transition
from opensage.store.resources import ConcurrentUpdate, Resource
from opensage.tuning import jobs
from opensage.tuning.jobs import CHILD_DEFINITION, CHILD_RETRY_OF, CHILD_TUNED, KIND, RUNNING
from opensage.tuning.strategies import Study, new_study

log = logging.getLogger(__name__)

METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"
CONVERGENCE_WINDOW = 10  # ConvergenceDetected: this many finished jobs in a row without a relative gain
CONVERGENCE_TOLERANCE = 1e-4


class TuningReconciler(ReconcileLoop):
    def __init__(self, deps: Deps, services: dict[str, Any]) -> None:
        self.d = deps
        self.services = services
        self._studies: dict[str, Study] = {}
        self._init_loop("tuning-reconciler", busy_interval=0.5, idle_interval=30.0)

    @property
    def training(self) -> Any:
        return self.services["training"]

    # -- loop ----------------------------------------------------------------------------------------
    def run_once(self) -> bool:
        busy = False
        for job in self.d.resources.in_status(KIND, ("InProgress", "Stopping")):
            try:
                self._reconcile(job)
            except ConcurrentUpdate:
                pass  # a Stop arrived meanwhile: the next pass sees it
            except Exception:
                log.exception("tuning job %s: pass failed", job.name)
            busy = True
        return busy

    def shutdown(self, stop_jobs: bool = True) -> None:
        # Children are ordinary training jobs: the training reconciler stops (or leaves) them itself.
        self._stop_loop()

    # -- one job -------------------------------------------------------------------------------------
    def _reconcile(self, job: Resource) -> None:
        rows = jobs.children(self.d, job.arn)
        running = [r for r in rows if r.status in RUNNING]
        if job.status == "Stopping":
            self._stop_children(running)
            if not running:
                self._finish(job, rows, "Stopped")
            return
        study = self._study(job, rows)
        self._observe(job, study, rows)
        ending = self._ending(job, study, rows)
        if ending is not None:
            reason, stop_running = ending
            if stop_running:
                self._stop_children(running)
            if not running:
                self._finish(job, rows, "Completed", reason)
            elif reason != "MaxNumberOfTrainingJobs" and not job.state.get("_ending"):
                self._save(job, _ending=[reason, stop_running])
            return
        self._launch(job, study, rows, running)

    def _study(self, job: Resource, rows: list[Resource]) -> Study:
        study = self._studies.get(job.name)
        if study is None:
            study = self._rebuild(job, rows)
            self._studies[job.name] = study
        return study

    def _rebuild(self, job: Resource, rows: list[Resource]) -> Study:
        """A study holding what the store says happened: warm-start parents' jobs, then this job's children
        (finished ones told; running ones as running trials, told when they end)."""
        config = job.request["HyperParameterTuningJobConfig"]
        definitions = jobs.definitions(job.request)
        study = new_study(job.name, config, definitions, jobs.objective_of(job.request)["Type"], _max_jobs(job),
                          resumed_trials=len(rows))
        for parent_name in _parents(job.request):
            parent = self.d.resources.get(KIND, parent_name)
            if parent is None:
                continue
            for r in jobs.children(self.d, parent.arn):
                definition = study.definition(r.request.get(CHILD_DEFINITION)) or (
                    definitions[0] if len(definitions) == 1 else None)
                metric = jobs.child_metric(r, parent.request)["MetricName"]
                value = jobs.objective_value(r, metric)
                if definition is None or r.status != "Completed" or value is None:
                    continue
                study.add_finished(definition, r.request.get(CHILD_TUNED) or {}, "complete", value, [])
        for r in rows:
            definition = study.definition(r.request.get(CHILD_DEFINITION))
            if definition is None:
                continue
            metric = definition.objective["MetricName"]
            values = self._intermediate(r, metric)
            if r.status in RUNNING:
                state, value = "running", None
            else:
                state, value = _outcome(job, r, metric)
            number = study.add_finished(definition, r.request.get(CHILD_TUNED) or {}, state, value, values)
            if number is None:
                continue
            study.trials[r.name] = number
            study.reported[r.name] = len(values)
            if state != "running":
                study.told.add(r.name)
        if rows:
            log.info("tuning job %s: study rebuilt from %d training job(s)", job.name, len(rows))
        return study

    def _intermediate(self, child: Resource, metric: str) -> list[float]:
        return [v for _, v in self.d.metrics.series(METRICS_NAMESPACE, {"TrainingJobName": child.name}, metric)]

    def _observe(self, job: Resource, study: Study, rows: list[Resource]) -> None:
        """Tell finished children; report running ones' intermediate values and stop what is pruned."""
        pruned = set(job.state.get("_early_stopped") or [])
        newly_pruned = []
        for r in rows:
            definition = study.definition(r.request.get(CHILD_DEFINITION))
            if definition is None or r.name in study.told:
                continue
            metric = definition.objective["MetricName"]
            if r.name not in study.trials:  # created by a pass that failed before recording its trial
                running = r.status in RUNNING
                state, value = ("running", None) if running else _outcome(job, r, metric)
                number = study.add_finished(definition, r.request.get(CHILD_TUNED) or {}, state, value, [])
                if number is None:
                    continue
                study.trials[r.name] = number
                if not running:
                    study.told.add(r.name)
                    continue
            if r.status not in RUNNING:
                state, value = _outcome(job, r, metric)
                study.tell(r.name, value, state)
                continue
            if study.prunes and r.status == "InProgress" and r.name not in pruned:
                if study.report(r.name, self._intermediate(r, metric)):
                    log.info("tuning job %s: stopping %s early", job.name, r.name)
                    self._stop_children([r])
                    newly_pruned.append(r.name)
        if newly_pruned:
            self._save(job, _early_stopped=sorted(pruned | set(newly_pruned)))

    def _ending(self, job: Resource, study: Study, rows: list[Resource]) -> tuple[str, bool] | None:
        """(reason, stop running children) when the job must end, else None."""
        if job.state.get("_ending"):  # decided on an earlier pass (a completion criterion met)
            reason, stop_running = job.state["_ending"]
            return reason, stop_running
        config = job.request["HyperParameterTuningJobConfig"]
        limits = config["ResourceLimits"]
        now = self.d.clock.time()
        if limits.get("MaxRuntimeInSeconds") and now - job.creation_time >= limits["MaxRuntimeInSeconds"]:
            return "MaxRuntimeInSeconds", True
        criteria = config.get("TuningJobCompletionCriteria") or {}
        objective = jobs.objective_of(job.request)
        finished = [r for r in rows if r.status not in RUNNING]
        best = jobs.best_child(rows, job.request)
        if best is not None and criteria.get("TargetObjectiveMetricValue") is not None:
            value = jobs.objective_value(best, jobs.child_metric(best, job.request)["MetricName"])
            target = float(criteria["TargetObjectiveMetricValue"])
            if value is not None and (value == target or jobs.better(value, target, objective["Type"])):
                return "TargetObjectiveMetricValue", True
        stale = not_improving(finished, job.request)
        limit = (criteria.get("BestObjectiveNotImproving") or {}).get("MaxNumberOfTrainingJobsNotImproving")
        if limit and stale >= limit:
            return "BestObjectiveNotImproving", False
        if ((criteria.get("ConvergenceDetected") or {}).get("CompleteOnConvergence") == "Enabled"
                and _converged(finished, job.request)):
            return "ConvergenceDetected", False
        trials = [r for r in rows if not r.request.get(CHILD_RETRY_OF)]
        if len(trials) >= _max_jobs(job) and not self._retries(job, rows):
            return "MaxNumberOfTrainingJobs", False
        return None

    def _retries(self, job: Resource, rows: list[Resource]) -> list[Resource]:
        """Failed children that may run again (RetryStrategy.MaximumRetryAttempts of their definition)."""
        retried = jobs.retried(rows)
        by_name = {r.name: r for r in rows}
        out = []
        for r in rows:
            if r.status != "Failed" or r.name in retried:
                continue
            definition = next((d for d in jobs.definitions(job.request)
                               if d.name == r.request.get(CHILD_DEFINITION)), None)
            attempts = ((definition.request.get("RetryStrategy") or {}).get("MaximumRetryAttempts")
                        if definition else 0) or 0
            depth, cur = 0, r
            while cur.request.get(CHILD_RETRY_OF) and cur.request[CHILD_RETRY_OF] in by_name:
                depth += 1
                cur = by_name[cur.request[CHILD_RETRY_OF]]
            if depth < attempts:
                out.append(r)
        return out

    def _launch(self, job: Resource, study: Study, rows: list[Resource], running: list[Resource]) -> None:
        config = job.request["HyperParameterTuningJobConfig"]
        parallel = config["ResourceLimits"]["MaxParallelTrainingJobs"]
        slots = parallel - len(running)
        if slots <= 0:
            return
        index = len(rows)
        trials = len([r for r in rows if not r.request.get(CHILD_RETRY_OF)])
        retries = self._retries(job, rows)
        grid = None
        if config["Strategy"] == "Grid":
            grid = [(d, combo) for d in study.definitions for combo in d.space.grid()]
        while slots > 0:
            retry_of = None
            if retries:
                failed = retries.pop(0)
                definition = study.definition(failed.request.get(CHILD_DEFINITION))
                fixed = (definition, failed.request.get(CHILD_TUNED) or {}) if definition else None
                retry_of = failed.name
            elif trials < _max_jobs(job):
                fixed = grid[trials] if grid is not None and trials < len(grid) else None
                trials += 1
            else:
                return
            number, definition, tuned = study.ask(fixed)
            index += 1
            name = jobs.child_name(job.name, index)
            params = jobs.child_request(job, definition, name, tuned, retry_of)
            try:
                self.training.create_training_job(RequestContext(), params)
            except ServiceError as exc:
                # The definition cannot make a training job (e.g. an input prefix emptied since Create):
                # every child would fail the same way.
                self._fail_trial(study, number)
                self._finish(job, rows, "Failed", failure=f"Could not create training job {name}: {exc.message}")
                return
            study.trials[name] = number
            log.info("tuning job %s: launched %s %s", job.name, name, tuned)
            slots -= 1

    def _fail_trial(self, study: Study, number: int) -> None:
        import optuna

        try:
            study.study.tell(number, state=optuna.trial.TrialState.FAIL)
        except (ValueError, RuntimeError):
            pass

    def _stop_children(self, running: list[Resource]) -> None:
        for r in running:
            if r.status != "InProgress":
                continue
            try:
                self.training.stop_training_job(RequestContext(), {"TrainingJobName": r.name})
            except ServiceError as exc:  # finished meanwhile
                log.debug("stop %s: %s", r.name, exc.message)

    def _finish(self, job: Resource, rows: list[Resource], status: str, reason: str | None = None,
                failure: str | None = None) -> None:
        now = self.d.clock.time()
        state: dict[str, Any] = {"HyperParameterTuningEndTime": now}
        if status == "Completed" and rows and all(r.status == "Failed" for r in rows):
            status = "Failed"
            failure = failure or "All training jobs failed. See the training jobs' FailureReason for details."
        if failure:
            status = "Failed"
            state["FailureReason"] = failure[:1024]
        details = {"NumberOfTrainingJobsObjectiveNotImproving": not_improving(
            [r for r in rows if r.status not in RUNNING], job.request)}
        if reason == "ConvergenceDetected":
            details["ConvergenceDetectedTime"] = now
        state["TuningJobCompletionDetails"] = details
        transition(self.d.resources, job, status, now, **state)
        self._studies.pop(job.name, None)
        for hook in self.d.on_job_end.get(KIND, ()):  # e.g. a pipeline's TuningStep waiting on this job
            try:
                hook(job)
            except Exception:
                log.exception("tuning job %s: an on_job_end hook failed", job.name)
        log.info("tuning job %s: %s%s", job.name, status, f" ({reason})" if reason else "")

    def _save(self, job: Resource, **state: Any) -> None:
        job.state.update(state)
        self.d.resources.save(job, self.d.clock.time())


def _parents(request: dict[str, Any]) -> list[str]:
    return [p["HyperParameterTuningJobName"]
            for p in (request.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs") or []]


def _max_jobs(job: Resource) -> int:
    limits = job.request["HyperParameterTuningJobConfig"]["ResourceLimits"]
    return limits.get("MaxNumberOfTrainingJobs") or jobs.DEFAULT_MAX_JOBS


def _outcome(job: Resource, child: Resource, metric: str) -> tuple[str, float | None]:
    """A finished child as a trial: complete (with its objective), pruned (stopped early) or fail."""
    value = jobs.objective_value(child, metric)
    if child.status == "Completed" and value is not None:
        return "complete", value
    if child.status == "Stopped" and child.name in (job.state.get("_early_stopped") or []):
        return "pruned", value
    return "fail", None


def _values_in_order(finished: list[Resource], request: dict[str, Any]) -> list[float]:
    out = []
    for r in sorted(finished, key=lambda r: (r.state.get("TrainingEndTime") or r.last_modified_time, r.name)):
        if r.status == "Completed":
            value = jobs.objective_value(r, jobs.child_metric(r, request)["MetricName"])
            if value is not None:
                out.append(value)
    return out


def not_improving(finished: list[Resource], request: dict[str, Any]) -> int:
    """How many completed jobs in a row (most recent) did not improve on the best before them."""
    kind = jobs.objective_of(request)["Type"]
    best, count = None, 0
    for value in _values_in_order(finished, request):
        if best is None or jobs.better(value, best, kind):
            best, count = value, 0
        else:
            count += 1
    return count


_not_improving = not_improving  # the name tests/unit/tuning use


def _converged(finished: list[Resource], request: dict[str, Any]) -> bool:
    """No relative gain above CONVERGENCE_TOLERANCE over the last CONVERGENCE_WINDOW completed jobs."""
    values = _values_in_order(finished, request)
    if len(values) <= CONVERGENCE_WINDOW:
        return False
    kind = jobs.objective_of(request)["Type"]
    pick = max if kind == "Maximize" else min
    before = pick(values[:-CONVERGENCE_WINDOW])
    after = pick(values)
    return abs(after - before) <= CONVERGENCE_TOLERANCE * max(1.0, abs(before))
