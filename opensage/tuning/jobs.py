"""What a tuning job is made of, shared by the API (services/tuning.py) and the reconciler: its training job
definitions and their search spaces, the child training-job request, and the results read back from the
child jobs' rows (summaries, counters, the best job). Child rows are the source of truth for progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opensage.errors import ValidationException
from opensage.services.base import Deps, check_s3_uri
from opensage.store.resources import ListQuery, Resource
from opensage.tuning import autotune
from opensage.tuning.ranges import SearchSpace, parse_ranges

KIND = "hyper-parameter-tuning-job"
TRAINING_KIND = "training-job"
OBJECTIVE_HP = "_tuning_objective_metric"
DEFAULT_MAX_JOBS = 500  # no MaxNumberOfTrainingJobs given (a completion criterion then usually ends the job)
# Private members of a child's CreateTrainingJob params (stored in its request, never serialized): the
# training service puts _TuningJobArn in the row's parent column.
CHILD_TUNED = "_TunedHyperParameters"
CHILD_DEFINITION = "_TuningDefinitionName"
CHILD_RETRY_OF = "_TuningRetryOf"
RUNNING = ("InProgress", "Stopping")


@dataclass(frozen=True)
class Definition:
    """One training job definition of a tuning job and what it searches."""

    name: str | None  # DefinitionName (TrainingJobDefinitions) or None (TrainingJobDefinition)
    request: dict[str, Any]  # the definition as stored (StaticHyperParameters include the objective HP)
    objective: dict[str, str]  # {Type, MetricName}
    space: SearchSpace

    def key(self, param: str) -> str:
        """The study's parameter name: prefixed with the definition when several share one study."""
        return f"{self.name}:{param}" if self.name else param


def definitions(request: dict[str, Any]) -> list[Definition]:
    """The stored request's definitions (already validated at Create)."""
    config = request["HyperParameterTuningJobConfig"]
    if request.get("TrainingJobDefinition"):
        d = request["TrainingJobDefinition"]
        ranges = config.get("ParameterRanges") or d.get("HyperParameterRanges")
        return [Definition(None, d, d.get("TuningObjective") or config["HyperParameterTuningJobObjective"],
                           parse_ranges(ranges))]
    return [Definition(d["DefinitionName"], d,
                       d.get("TuningObjective") or config.get("HyperParameterTuningJobObjective"),
                       parse_ranges(d.get("HyperParameterRanges") or config.get("ParameterRanges"),
                                    f"TrainingJobDefinitions[{d['DefinitionName']}].HyperParameterRanges"))
            for d in request.get("TrainingJobDefinitions") or []]


def objective_of(request: dict[str, Any]) -> dict[str, str]:
    config = request["HyperParameterTuningJobConfig"]
    return config.get("HyperParameterTuningJobObjective") or definitions(request)[0].objective


# ------------------------------------------------------------------------------------------ validation
def emitted_metrics(definition: dict[str, Any]) -> set[str] | None:
    """Metric names a definition's jobs report: its MetricDefinitions plus a built-in algorithm's own.
    None when the image is not one this platform can run (the child jobs then fail with the reason)."""
    from opensage import images
    from opensage.algorithms.registry import describe_metric_definitions
    from opensage.services.training import resolve_image

    algo = definition.get("AlgorithmSpecification") or {}
    names = {m["Name"] for m in algo.get("MetricDefinitions") or []}
    params = {"AlgorithmSpecification": algo, "HyperParameters": definition.get("StaticHyperParameters") or {}}
    try:
        resolved = resolve_image(params)
    except images.UnsupportedImage:
        return None
    if resolved.kind == "builtin":
        names.update(m["Name"] for m in resolved.metric_definitions or [])
        names.update(m["Name"] for m in describe_metric_definitions(algo.get("TrainingImage") or "") or [])
    return names


def objective_metric_definitions(definition: dict[str, Any], metric: str) -> list[dict[str, str]] | None:
    """The service's MetricDefinitions for a built-in algorithm whose objective the runner's own regexes do
    not capture (e.g. XGBoost's ``validation:r2``), to pass to the child job; None when nothing is missing.
    Passing SageMaker's full list keeps the child's DescribeTrainingJob as SageMaker shows it."""
    from opensage import images
    from opensage.algorithms.registry import describe_metric_definitions
    from opensage.services.training import resolve_image

    algo = definition.get("AlgorithmSpecification") or {}
    if algo.get("MetricDefinitions"):
        return None
    try:
        resolved = resolve_image({"AlgorithmSpecification": algo,
                                  "HyperParameters": definition.get("StaticHyperParameters") or {}})
    except images.UnsupportedImage:
        return None
    if resolved.kind != "builtin" or any(m["Name"] == metric for m in resolved.metric_definitions or []):
        return None
    service = describe_metric_definitions(algo.get("TrainingImage") or "") or []
    return service if any(m["Name"] == metric for m in service) else None


def check_definition(d: dict[str, Any], objective: dict[str, str], space: SearchSpace, where: str) -> None:
    algo = d.get("AlgorithmSpecification") or {}
    if not algo.get("TrainingImage") and not algo.get("AlgorithmName"):
        raise ValidationException(f"{where}.AlgorithmSpecification must specify either TrainingImage or "
                                  "AlgorithmName.")
    if not d.get("ResourceConfig") and not d.get("HyperParameterTuningResourceConfig"):
        raise ValidationException(f"{where} must specify ResourceConfig or HyperParameterTuningResourceConfig.")
    if d.get("ResourceConfig") and d.get("HyperParameterTuningResourceConfig"):
        raise ValidationException(f"{where} must specify only one of ResourceConfig and "
                                  "HyperParameterTuningResourceConfig.")
    hp = d.get("HyperParameterTuningResourceConfig") or {}
    if hp.get("InstanceConfigs") and any(hp.get(k) for k in ("InstanceType", "InstanceCount", "VolumeSizeInGB")):
        raise ValidationException(
            f"{where}.HyperParameterTuningResourceConfig: if you use InstanceConfigs, do not provide values for "
            "InstanceType, VolumeSizeInGB or InstanceCount.")
    check_s3_uri(d["OutputDataConfig"]["S3OutputPath"], f"{where}.OutputDataConfig.S3OutputPath")
    static = d.get("StaticHyperParameters") or {}
    for name in space.names:
        if name in static:
            raise ValidationException(
                f"The hyperparameter '{name}' is both a static hyperparameter and in a parameter range of "
                f"{where}; remove it from StaticHyperParameters or from the ranges.")
    if OBJECTIVE_HP in space.names:
        raise ValidationException(f"The hyperparameter '{OBJECTIVE_HP}' is reserved and cannot be tuned.")
    emitted = emitted_metrics(d)
    metric = objective["MetricName"]
    if emitted is not None and metric not in emitted:
        known = ", ".join(sorted(emitted)) if emitted else "none (add MetricDefinitions to the "\
                                                            "AlgorithmSpecification)"
        raise ValidationException(
            f"The objective metric '{metric}' of {where} is not a metric the training jobs emit. "
            f"Metrics defined for this algorithm: {known}.")


def normalize(request: dict[str, Any]) -> dict[str, Any]:
    """Validate a CreateHyperParameterTuningJob request (what the spec cannot express) and return it as
    stored: StaticHyperParameters carry ``_tuning_objective_metric`` as SageMaker's Describe shows."""
    config = dict(request["HyperParameterTuningJobConfig"])
    single, several = request.get("TrainingJobDefinition"), request.get("TrainingJobDefinitions")
    if bool(single) == bool(several):
        raise ValidationException("Specify exactly one of TrainingJobDefinition and TrainingJobDefinitions.")
    auto = autotune.enabled(request)
    if not auto:
        autotune.check_auto_parameters_need_autotune(request)
    strategy = config["Strategy"]
    early = config.get("TrainingJobEarlyStoppingType") or "Off"
    if strategy == "Hyperband" and early != "Off":
        raise ValidationException("TrainingJobEarlyStoppingType must be Off with the Hyperband strategy: "
                                  "Hyperband stops underperforming training jobs itself.")
    hb = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig")
    if hb and strategy != "Hyperband":
        raise ValidationException("StrategyConfig.HyperbandStrategyConfig is only valid with the Hyperband "
                                  "strategy.")
    if hb and hb.get("MinResource") and hb.get("MaxResource") and hb["MinResource"] > hb["MaxResource"]:
        raise ValidationException("HyperbandStrategyConfig.MinResource must not exceed MaxResource.")
    limits = config["ResourceLimits"]
    max_jobs = limits.get("MaxNumberOfTrainingJobs")
    if max_jobs is not None and limits["MaxParallelTrainingJobs"] > max_jobs:
        raise ValidationException(
            f"ResourceLimits.MaxParallelTrainingJobs ({limits['MaxParallelTrainingJobs']}) cannot be greater "
            f"than MaxNumberOfTrainingJobs ({max_jobs}).")
    out = {k: v for k, v in request.items() if k != "Tags"}
    if single:
        objective = single.get("TuningObjective") or config.get("HyperParameterTuningJobObjective")
        if not objective:
            raise ValidationException("HyperParameterTuningJobConfig.HyperParameterTuningJobObjective is "
                                      "required with a TrainingJobDefinition.")
        ranges = config.get("ParameterRanges") or single.get("HyperParameterRanges")
        if auto:
            ranges, kept = autotune.resolve_ranges(ranges, single, "HyperParameterTuningJobConfig.ParameterRanges"
                                                   if config.get("ParameterRanges") else
                                                   "TrainingJobDefinition.HyperParameterRanges")
            if config.get("ParameterRanges"):
                config["ParameterRanges"] = ranges
            else:
                single = {**single, "HyperParameterRanges": ranges}
            single = {**single, "StaticHyperParameters": {**(single.get("StaticHyperParameters") or {}), **kept}}
        space = parse_ranges(ranges)
        check_definition(single, objective, space, "TrainingJobDefinition")
        out["TrainingJobDefinition"] = _with_objective_hp(single, objective)
        spaces = [space]
    else:
        names = [d.get("DefinitionName") for d in several]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ValidationException("Each of TrainingJobDefinitions needs a unique DefinitionName.")
        stored, spaces, types = [], [], set()
        for d in several:
            where = f"TrainingJobDefinitions[{d['DefinitionName']}]"
            objective = d.get("TuningObjective") or config.get("HyperParameterTuningJobObjective")
            if not objective:
                raise ValidationException(f"{where}.TuningObjective is required with TrainingJobDefinitions.")
            types.add(objective["Type"])
            ranges = d.get("HyperParameterRanges") or config.get("ParameterRanges")
            if auto:
                ranges, kept = autotune.resolve_ranges(ranges, d, f"{where}.HyperParameterRanges")
                d = {**d, "HyperParameterRanges": ranges,
                     "StaticHyperParameters": {**(d.get("StaticHyperParameters") or {}), **kept}}
            space = parse_ranges(ranges, f"{where}.HyperParameterRanges")
            check_definition(d, objective, space, where)
            stored.append(_with_objective_hp(d, objective))
            spaces.append(space)
        if len(types) > 1:
            raise ValidationException("Every TuningObjective of TrainingJobDefinitions must have the same Type.")
        out["TrainingJobDefinitions"] = stored
    if strategy == "Grid":
        size = sum(s.grid_size() for s in spaces)  # raises for continuous ranges
        limits = dict(limits)
        if max_jobs is None or max_jobs > size:
            limits["MaxNumberOfTrainingJobs"] = size
        config["ResourceLimits"] = limits
    if auto:
        config["ResourceLimits"] = autotune.resource_limits(config["ResourceLimits"],
                                                            max(len(s.ranges) for s in spaces))
        config["TuningJobCompletionCriteria"] = autotune.completion_criteria(config.get("TuningJobCompletionCriteria"))
    out["HyperParameterTuningJobConfig"] = config
    return out


def _with_objective_hp(definition: dict[str, Any], objective: dict[str, str]) -> dict[str, Any]:
    static = dict(definition.get("StaticHyperParameters") or {})
    static[OBJECTIVE_HP] = objective["MetricName"]
    return {**definition, "StaticHyperParameters": static}


# ------------------------------------------------------------------------------------------ children
def child_name(tuning_name: str, index: int) -> str:
    """``<tuning job>-<NNN>-<8 hex>`` as SageMaker names child jobs (contracts §10)."""
    import secrets

    return f"{tuning_name}-{index:03d}-{secrets.token_hex(4)}"


def child_request(tuning: Resource, definition: Definition, name: str, tuned: dict[str, str],
                  retry_of: str | None = None) -> dict[str, Any]:
    """CreateTrainingJob params for a child: the definition, static + tuned hyperparameters."""
    d = definition.request
    params: dict[str, Any] = {
        "TrainingJobName": name,
        "RoleArn": d["RoleArn"],
        "AlgorithmSpecification": d["AlgorithmSpecification"],
        "HyperParameters": {**(d.get("StaticHyperParameters") or {}), **tuned},
        "OutputDataConfig": d["OutputDataConfig"],
        "StoppingCondition": d["StoppingCondition"],
        "_TuningJobArn": tuning.arn,
        CHILD_TUNED: tuned,
        CHILD_DEFINITION: definition.name,
        CHILD_RETRY_OF: retry_of,
    }
    params["ResourceConfig"] = resource_config(d)
    service_definitions = objective_metric_definitions(d, definition.objective["MetricName"])
    if service_definitions:
        params["AlgorithmSpecification"] = {**d["AlgorithmSpecification"], "MetricDefinitions": service_definitions}
    for key in ("InputDataConfig", "VpcConfig", "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                "EnableManagedSpotTraining", "CheckpointConfig", "Environment"):
        if d.get(key) is not None:
            params[key] = d[key]
    return params


def resource_config(d: dict[str, Any]) -> dict[str, Any]:
    """A definition's ResourceConfig, or the one its HyperParameterTuningResourceConfig (what SDK v2 sends)
    stands for. With InstanceConfigs, AllocationStrategy Prioritized: SageMaker takes the first configuration
    that has capacity, in order; this platform runs whatever instance type it is given (the type only names
    the job's hosts), so the first always has capacity and every child uses it."""
    if d.get("ResourceConfig"):
        return d["ResourceConfig"]
    hp = d.get("HyperParameterTuningResourceConfig") or {}
    first = (hp.get("InstanceConfigs") or [{}])[0]
    out = {"InstanceType": hp.get("InstanceType") or first.get("InstanceType") or "ml.m5.large",
           "InstanceCount": hp.get("InstanceCount") or first.get("InstanceCount") or 1,
           "VolumeSizeInGB": hp.get("VolumeSizeInGB") or first.get("VolumeSizeInGB") or 30}
    if hp.get("VolumeKmsKeyId"):
        out["VolumeKmsKeyId"] = hp["VolumeKmsKeyId"]
    return out


def children(deps: Deps, tuning_arn: str) -> list[Resource]:
    """Every child training job of a tuning job, oldest first."""
    out: list[Resource] = []
    token = None
    while True:
        page, token = deps.resources.list(TRAINING_KIND, ListQuery(parent_arn=tuning_arn, limit=500,
                                                                   next_token=token))
        out.extend(page)
        if not token:
            return out


def objective_value(child: Resource, metric: str) -> float | None:
    for m in child.state.get("FinalMetricDataList") or []:
        if m.get("MetricName") == metric:
            return float(m["Value"])
    return None


def objective_status(child: Resource, metric: str) -> str:
    if child.status in RUNNING:
        return "Pending"
    if child.status in ("Completed", "Stopped") and objective_value(child, metric) is not None:
        return "Succeeded"
    return "Failed"


def child_metric(child: Resource, request: dict[str, Any]) -> dict[str, str]:
    """The objective (Type, MetricName) that applies to ``child`` (its definition's)."""
    name = child.request.get(CHILD_DEFINITION)
    for d in definitions(request):
        if d.name == name:
            return d.objective
    return objective_of(request)


def child_summary(child: Resource, tuning_name: str, objective: dict[str, str]) -> dict[str, Any]:
    """HyperParameterTrainingJobSummary of a child row."""
    out: dict[str, Any] = {
        "TrainingJobName": child.name,
        "TrainingJobArn": child.arn,
        "TuningJobName": tuning_name,
        "CreationTime": child.creation_time,
        "TrainingJobStatus": child.status,
        "TunedHyperParameters": child.request.get(CHILD_TUNED) or {},
        "ObjectiveStatus": objective_status(child, objective["MetricName"]),
    }
    if child.request.get(CHILD_DEFINITION):
        out["TrainingJobDefinitionName"] = child.request[CHILD_DEFINITION]
    for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
        if child.state.get(key) is not None:
            out[key] = child.state[key]
    value = objective_value(child, objective["MetricName"])
    if value is not None and child.status not in RUNNING:
        out["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": objective["Type"], "MetricName": objective["MetricName"], "Value": value}
    return out


def retried(rows: list[Resource]) -> set[str]:
    return {r.request[CHILD_RETRY_OF] for r in rows if r.request.get(CHILD_RETRY_OF)}


def counters(rows: list[Resource], request: dict[str, Any], retry_pending: set[str] | None = None
             ) -> tuple[dict[str, int], dict[str, int]]:
    """TrainingJobStatusCounters and ObjectiveStatusCounters of the children."""
    again = retried(rows) | (retry_pending or set())
    status = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    objective = {"Succeeded": 0, "Pending": 0, "Failed": 0}
    for r in rows:
        if r.status in RUNNING:
            status["InProgress"] += 1
        elif r.status == "Failed":
            status["RetryableError" if r.name in again else "NonRetryableError"] += 1
        elif r.status in status:
            status[r.status] += 1
        objective[objective_status(r, child_metric(r, request)["MetricName"])] += 1
    return status, objective


def better(a: float, b: float, kind: str) -> bool:
    return a > b if kind == "Maximize" else a < b


def best_child(rows: list[Resource], request: dict[str, Any]) -> Resource | None:
    """The Completed child with the best objective value (ties: the earliest)."""
    best, best_value = None, None
    kind = objective_of(request)["Type"]
    for r in rows:
        if r.status != "Completed":
            continue
        value = objective_value(r, child_metric(r, request)["MetricName"])
        if value is not None and (best_value is None or better(value, best_value, kind)):
            best, best_value = r, value
    return best
