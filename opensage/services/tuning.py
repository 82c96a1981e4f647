"""Hyperparameter tuning jobs: Create/Describe/List/Stop/Delete and ListTrainingJobsForHyperParameterTuningJob.

Requests record intent; the tuning reconciler (opensage/tuning/reconciler.py) launches the child training
jobs. Progress (counters, best job) is read from the child rows, the source of truth, on every Describe.
"""

from __future__ import annotations

from typing import Any

from opensage.errors import ResourceInUse, ResourceNotFound, ValidationException
from opensage.services.base import Deps, list_jobs, open_next_token, seal_next_token
from opensage.store.resources import AlreadyExists, ConcurrentUpdate, Resource
from opensage.store.tags import check_user_tags
from opensage.tuning import jobs
from opensage.tuning.jobs import KIND, RUNNING

TERMINAL = ("Completed", "Failed", "Stopped")
MAX_PARENTS = 5


class TuningService:
    def __init__(self, deps: Deps) -> None:
        self.d = deps

    def _get(self, name: str, missing=ResourceNotFound) -> Resource:
        res = self.d.resources.get(KIND, name)
        if res is None:
            raise missing(f"Amazon SageMaker can't find a tuning job with name {name}")
        return res

    def _check_warm_start(self, request: dict[str, Any]) -> None:
        warm = request.get("WarmStartConfig")
        if not warm:
            return
        parents = warm["ParentHyperParameterTuningJobs"]
        if len(parents) > MAX_PARENTS:
            raise ValidationException(f"WarmStartConfig.ParentHyperParameterTuningJobs lists {len(parents)} "
                                      f"tuning jobs; at most {MAX_PARENTS} are allowed.")
        metric = jobs.objective_of(request)
        for p in parents:
            parent = self.d.resources.get(KIND, p["HyperParameterTuningJobName"])
            if parent is None:
                raise ResourceNotFound(f"Amazon SageMaker can't find a tuning job with name "
                                       f"{p['HyperParameterTuningJobName']}")
            if parent.status not in TERMINAL:
                raise ValidationException(
                    f"The parent tuning job {parent.name} is {parent.status}; a parent of a warm start must have "
                    "finished (Completed, Stopped or Failed).")
            if jobs.objective_of(parent.request) != metric:
                raise ValidationException(
                    f"The objective of the parent tuning job {parent.name} "
                    f"({jobs.objective_of(parent.request)}) differs from this job's ({metric}); a warm start "
                    "needs the same objective metric and type.")
            if warm["WarmStartType"] == "IdenticalDataAndAlgorithm":
                mine, theirs = jobs.definitions(request), jobs.definitions(parent.request)
                if [_identity(d.request) for d in mine] != [_identity(d.request) for d in theirs]:
                    raise ValidationException(
                        f"IdenticalDataAndAlgorithm warm start needs the same training image and input data as "
                        f"the parent tuning job {parent.name}; use TransferLearning when they differ.")

    # -- operations --------------------------------------------------------------------------------
    def create_hyper_parameter_tuning_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        name = params["HyperParameterTuningJobName"]
        arn = self.d.arns.sagemaker(KIND, name)
        in_use = ResourceInUse(f"Hyperparameter tuning job names must be unique within an AWS account and "
                               f"region, and a tuning job with this name already exists ({arn})")
        if self.d.resources.get(KIND, name) is not None:
            raise in_use
        if getattr(ctx, "principal", "http") is None:
            # An in-process caller (a pipeline's TuningStep) skips the API's shape validation: apply it here
            # so a bad value fails as it would over the wire.
            from opensage.api.spec import operation_model
            from opensage.api.validate import validate

            validate(params, operation_model("sagemaker", "CreateHyperParameterTuningJob").input_shape)
        request = jobs.normalize(params)
        self._check_warm_start(request)
        check_user_tags(params.get("Tags") or [])
        now = self.d.clock.time()
        try:
            self.d.resources.create(Resource(KIND, name, arn, "InProgress", now, now, request, {}))
        except AlreadyExists:
            raise in_use from None
        self.d.tags.put(arn, params.get("Tags") or [])
        self.d.wake(KIND)
        return {"HyperParameterTuningJobArn": arn}

    def describe_hyper_parameter_tuning_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return describe(self.d, self._get(params["HyperParameterTuningJobName"]))

    def list_hyper_parameter_tuning_jobs(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        return list_jobs(self.d, KIND, params, "HyperParameterTuningJobSummaries",
                         lambda res: summary(self.d, res))

    def stop_hyper_parameter_tuning_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        from opensage.states import transition

        name = params["HyperParameterTuningJobName"]
        for _ in range(5):
            res = self._get(name)
            if res.status == "Stopping":
                return {}
            if res.status != "InProgress":
                raise ValidationException(f"The request was rejected because the tuning job is in status "
                                          f"{res.status}.")
            try:
                transition(self.d.resources, res, "Stopping", self.d.clock.time())
            except ConcurrentUpdate:
                continue
            self.d.wake(KIND)
            return {}
        raise ValidationException("The tuning job is being updated; retry StopHyperParameterTuningJob.")

    def delete_hyper_parameter_tuning_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        """Deletes the tuning job's entry only; its training jobs and their artifacts stay (as SageMaker)."""
        res = self._get(params["HyperParameterTuningJobName"])
        if res.status not in TERMINAL + ("DeleteFailed",):
            raise ValidationException(f"The tuning job {res.name} is {res.status}; only a Completed, Stopped or "
                                      "Failed tuning job can be deleted (stop it first).")
        self.d.resources.delete(KIND, res.name)
        self.d.tags.put(res.arn, [])
        return {}

    def list_training_jobs_for_hyper_parameter_tuning_job(self, ctx, params: dict[str, Any]) -> dict[str, Any]:
        operation = "ListTrainingJobsForHyperParameterTuningJob"
        res = self._get(params["HyperParameterTuningJobName"])
        rows = jobs.children(self.d, res.arn)
        if params.get("StatusEquals"):
            rows = [r for r in rows if r.status == params["StatusEquals"]]
        items = [jobs.child_summary(r, res.name, jobs.child_metric(r, res.request)) for r in rows]
        sort_by = params.get("SortBy") or "Name"
        descending = (params.get("SortOrder") or "Ascending") == "Descending"
        if sort_by == "FinalObjectiveMetricValue":
            # SageMaker lists only the jobs that returned an objective value when sorting by it.
            items = [i for i in items if "FinalHyperParameterTuningJobObjectiveMetric" in i]
        items.sort(key=_SORT_KEYS.get(sort_by, _SORT_KEYS["Name"]), reverse=descending)
        start = open_next_token(self.d, operation, params) or 0
        if not isinstance(start, int) or start < 0:
            raise ValidationException('Invalid pagination token because "the token cannot be read".')
        limit = params.get("MaxResults") or 10
        page = items[start:start + limit]
        out: dict[str, Any] = {"TrainingJobSummaries": page}
        if start + limit < len(items):
            out["NextToken"] = seal_next_token(self.d, operation, params, start + limit)
        return out


_SORT_KEYS: dict[str, Any] = {
    "Name": lambda i: i["TrainingJobName"],
    "CreationTime": lambda i: (i["CreationTime"], i["TrainingJobName"]),
    "Status": lambda i: (i["TrainingJobStatus"], i["TrainingJobName"]),
    "FinalObjectiveMetricValue": lambda i: (i["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
                                            i["TrainingJobName"]),
}


def _identity(definition: dict[str, Any]) -> tuple:
    algo = definition.get("AlgorithmSpecification") or {}
    channels = sorted((c["ChannelName"], (c.get("DataSource") or {}).get("S3DataSource", {}).get("S3Uri"))
                      for c in definition.get("InputDataConfig") or [])
    return algo.get("TrainingImage") or algo.get("AlgorithmName"), tuple(channels)


def _described_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """A definition as Describe shows it: with ResourceConfig, and with MetricDefinitions (a built-in
    algorithm's own, as SageMaker fills them; SDK v2's attach reads the member unconditionally)."""
    from opensage.algorithms.registry import describe_metric_definitions

    algo = dict(definition.get("AlgorithmSpecification") or {})
    if not algo.get("MetricDefinitions"):
        algo["MetricDefinitions"] = describe_metric_definitions(algo.get("TrainingImage") or "") or []
    out = {**definition, "ResourceConfig": jobs.resource_config(definition), "AlgorithmSpecification": algo}
    if definition.get("HyperParameterRanges") is not None:
        out["HyperParameterRanges"] = _all_range_lists(definition["HyperParameterRanges"])
    return out


def _all_range_lists(ranges: dict[str, Any]) -> dict[str, Any]:
    """ParameterRanges with its three lists, empty ones included, as SageMaker describes them (SDK v2's attach
    indexes all three)."""
    return {"IntegerParameterRanges": [], "ContinuousParameterRanges": [], "CategoricalParameterRanges": [],
            **ranges}


def _best_summary(d: Deps, rows: list[Resource], tuning: Resource) -> dict[str, Any] | None:
    best = jobs.best_child(rows, tuning.request)
    if best is None:
        return None
    return jobs.child_summary(best, tuning.name, jobs.child_metric(best, tuning.request))


def describe(d: Deps, res: Resource) -> dict[str, Any]:
    rows = jobs.children(d, res.arn)
    status, objective = jobs.counters(rows, res.request, set(res.state.get("_retry_pending") or []))
    out: dict[str, Any] = dict(res.request)
    out.update({k: v for k, v in res.state.items() if not k.startswith("_")})
    out.update({
        "HyperParameterTuningJobName": res.name,
        "HyperParameterTuningJobArn": res.arn,
        "HyperParameterTuningJobStatus": res.status,
        "CreationTime": res.creation_time,
        "LastModifiedTime": res.last_modified_time,
        "TrainingJobStatusCounters": status,
        "ObjectiveStatusCounters": objective,
    })
    config = dict(out["HyperParameterTuningJobConfig"])
    if config.get("ParameterRanges") is not None:
        config["ParameterRanges"] = _all_range_lists(config["ParameterRanges"])
    out["HyperParameterTuningJobConfig"] = {"TrainingJobEarlyStoppingType": "Off", **config}
    # SDK v2's attach reads TrainingJobDefinition.ResourceConfig even for a job created with
    # HyperParameterTuningResourceConfig (which the tuner sends): describe both.
    if out.get("TrainingJobDefinition"):
        out["TrainingJobDefinition"] = _described_definition(out["TrainingJobDefinition"])
    if out.get("TrainingJobDefinitions"):
        out["TrainingJobDefinitions"] = [_described_definition(x) for x in out["TrainingJobDefinitions"]]
    best = _best_summary(d, rows, res)
    if best:
        out["BestTrainingJob"] = best
    if res.request.get("WarmStartConfig"):
        overall = overall_best(d, res, rows)
        if overall:
            out["OverallBestTrainingJob"] = overall
    if "TuningJobCompletionDetails" not in out:  # still running: how things stand (set for good at the end)
        from opensage.tuning.reconciler import not_improving

        out["TuningJobCompletionDetails"] = {"NumberOfTrainingJobsObjectiveNotImproving": not_improving(
            [r for r in rows if r.status not in RUNNING], res.request)}
    end = res.state.get("HyperParameterTuningEndTime")
    out["ConsumedResources"] = {"RuntimeInSeconds": int((end or d.clock.time()) - res.creation_time)}
    return out


def overall_best(d: Deps, res: Resource, rows: list[Resource]) -> dict[str, Any] | None:
    """The best child of this job and of its warm-start parents (and theirs), as SageMaker's
    OverallBestTrainingJob."""
    kind = jobs.objective_of(res.request)["Type"]
    candidates: list[tuple[float, dict[str, Any]]] = []
    seen: set[str] = set()
    stack: list[tuple[Resource, list[Resource] | None]] = [(res, rows)]
    while stack:
        job, job_rows = stack.pop()
        if job.name in seen:
            continue
        seen.add(job.name)
        job_rows = job_rows if job_rows is not None else jobs.children(d, job.arn)
        best = _best_summary(d, job_rows, job)
        if best:
            candidates.append((best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"], best))
        for p in (job.request.get("WarmStartConfig") or {}).get("ParentHyperParameterTuningJobs") or []:
            parent = d.resources.get(KIND, p["HyperParameterTuningJobName"])
            if parent is not None:
                stack.append((parent, None))
    if not candidates:
        return None
    top = candidates[0]
    for c in candidates[1:]:
        if jobs.better(c[0], top[0], kind):
            top = c
    return top[1]


def summary(d: Deps, res: Resource) -> dict[str, Any]:
    rows = jobs.children(d, res.arn)
    status, objective = jobs.counters(rows, res.request, set(res.state.get("_retry_pending") or []))
    config = res.request["HyperParameterTuningJobConfig"]
    out = {
        "HyperParameterTuningJobName": res.name,
        "HyperParameterTuningJobArn": res.arn,
        "HyperParameterTuningJobStatus": res.status,
        "Strategy": config["Strategy"],
        "CreationTime": res.creation_time,
        "LastModifiedTime": res.last_modified_time,
        "TrainingJobStatusCounters": status,
        "ObjectiveStatusCounters": objective,
        "ResourceLimits": config["ResourceLimits"],
    }
    if res.state.get("HyperParameterTuningEndTime"):
        out["HyperParameterTuningEndTime"] = res.state["HyperParameterTuningEndTime"]
    return out


__all__ = ["TuningService", "describe", "summary", "RUNNING"]
