"""Autotune (``Autotune: {Mode: Enabled}``): the tuning job picks the settings the request leaves unset.

What SageMaker documents, and what this platform does with it:

* ``ParameterRanges.AutoParameters`` (``[{Name, ValueHint}]``, what SDK v2's ``HyperparameterTuner(autotune=True)``
  sends for every estimator hyperparameter not in ``hyperparameters_to_keep_static``): "if AMT determines that
  your hyperparameter is eligible for Autotune, an optimal hyperparameter range is selected for you". Eligible
  here: the tunable hyperparameters SageMaker documents for the built-in algorithm, with its recommended range
  (built-in XGBoost: "Tune an XGBoost Model"), widened to include the ValueHint when the hint lies outside it.
  Any other AutoParameter (``objective``, ``eval_metric``, a script's own argument) keeps its ValueHint as a
  static hyperparameter — tuning a value we know nothing about could only break the children.
* Other unset settings (SDK v2: "the parameter ranges or other unset settings of a tuning job should be chosen
  automatically"): ``ResourceLimits.MaxNumberOfTrainingJobs`` (10 per tuned hyperparameter, 10..100, the usual
  budget of Bayesian optimisation) and ``TuningJobCompletionCriteria.ConvergenceDetected`` (Enabled, so the job
  ends once the objective stops improving). Settings the request gives are kept: ``Strategy`` and
  ``ResourceLimits.MaxParallelTrainingJobs`` are required by the API, so they are always the caller's.

Describe shows the outcome: the chosen ranges next to the AutoParameters as sent, the ValueHints kept static
in StaticHyperParameters, and the chosen limits / criteria (as SageMaker shows a job's configuration).
"""

from __future__ import annotations

from typing import Any

from opensage.errors import ValidationException

AUTOTUNE_JOBS_PER_PARAMETER = 10
AUTOTUNE_MIN_JOBS, AUTOTUNE_MAX_JOBS = 10, 100

# SageMaker DG "Tune an XGBoost Model", Tunable XGBoost Hyperparameters: (range kind, MinValue, MaxValue).
XGBOOST_RANGES: dict[str, tuple[str, float, float]] = {
    "alpha": ("Continuous", 0, 1000),
    "colsample_bylevel": ("Continuous", 0.1, 1),
    "colsample_bynode": ("Continuous", 0.1, 1),
    "colsample_bytree": ("Continuous", 0.5, 1),
    "eta": ("Continuous", 0.1, 0.5),
    "gamma": ("Continuous", 0, 5),
    "lambda": ("Continuous", 0, 1000),
    "max_delta_step": ("Integer", 0, 10),
    "max_depth": ("Integer", 0, 10),
    "min_child_weight": ("Continuous", 0, 120),
    "num_round": ("Integer", 1, 4000),
    "subsample": ("Continuous", 0.5, 1),
}
TUNABLE: dict[str, dict[str, tuple[str, float, float]]] = {"xgboost": XGBOOST_RANGES}


def enabled(request: dict[str, Any]) -> bool:
    return ((request.get("Autotune") or {}).get("Mode")) == "Enabled"


def _algorithm(definition: dict[str, Any]) -> str | None:
    """The built-in algorithm a definition runs (``xgboost``, ``kmeans``...), None for other images."""
    from opensage import images
    from opensage.services.training import resolve_image

    algo = definition.get("AlgorithmSpecification") or {}
    try:
        resolved = resolve_image({"AlgorithmSpecification": algo,
                                  "HyperParameters": definition.get("StaticHyperParameters") or {}})
    except images.UnsupportedImage:
        return None
    return resolved.algorithm if resolved.kind == "builtin" else None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _fmt(value: float, kind: str) -> str:
    return str(int(value)) if kind == "Integer" else repr(float(value))


def resolve_ranges(ranges: dict[str, Any] | None, definition: dict[str, Any], where: str
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    """(ParameterRanges with a range for each eligible AutoParameter, hyperparameters kept static at their
    ValueHint). ``ranges`` keeps its AutoParameters (Describe shows them as sent)."""
    ranges = dict(ranges or {})
    autos = ranges.get("AutoParameters") or []
    if not autos:
        return ranges, {}
    # The estimator's values (SDK v2 moves even sagemaker_program into AutoParameters): what the image runs.
    hints = {a["Name"]: a["ValueHint"] for a in autos}
    algorithm = _algorithm({**definition, "StaticHyperParameters": {
        **hints, **(definition.get("StaticHyperParameters") or {})}})
    table = TUNABLE.get(algorithm or "", {})
    explicit = {r["Name"] for kind in ("Integer", "Continuous", "Categorical")
                for r in ranges.get(f"{kind}ParameterRanges") or []}
    static_names = set(definition.get("StaticHyperParameters") or {})
    added: dict[str, list[dict[str, str]]] = {"Integer": [], "Continuous": []}
    static: dict[str, str] = {}
    seen: set[str] = set()
    for auto in autos:
        name, hint = auto["Name"], auto["ValueHint"]
        if name in seen:
            raise ValidationException(f"The hyperparameter '{name}' appears more than once in {where}.AutoParameters.")
        seen.add(name)
        if name in explicit:
            raise ValidationException(f"The hyperparameter '{name}' is both in {where}.AutoParameters and in a "
                                      "parameter range; give it in one of them only.")
        if name in static_names:
            raise ValidationException(f"The hyperparameter '{name}' is both in {where}.AutoParameters and in "
                                      "StaticHyperParameters; give it in one of them only.")
        spec = table.get(name)
        value = _number(hint)
        if spec is None or value is None:
            static[name] = hint  # not eligible: runs with the example value
            continue
        kind, low, high = spec
        if kind == "Integer" and value != int(value):
            static[name] = hint
            continue
        low, high = min(low, value), max(high, value)
        added[kind].append({"Name": name, "MinValue": _fmt(low, kind), "MaxValue": _fmt(high, kind),
                            "ScalingType": "Auto"})
    for kind, items in added.items():
        if items:
            ranges[f"{kind}ParameterRanges"] = list(ranges.get(f"{kind}ParameterRanges") or []) + items
    if not explicit and not any(added.values()):
        known = ", ".join(sorted(table)) if table else "none for this training image (ranges are known for " \
                                                        f"the built-in {', '.join(sorted(TUNABLE))} algorithm)"
        raise ValidationException(
            f"Autotune found no tunable hyperparameter in {where}.AutoParameters "
            f"({', '.join(sorted(seen))}){' for ' + algorithm if algorithm else ''}; hyperparameters it can "
            f"tune: {known}. Give IntegerParameterRanges, ContinuousParameterRanges or CategoricalParameterRanges.")
    return ranges, static


def resource_limits(limits: dict[str, Any], tuned: int) -> dict[str, Any]:
    if limits.get("MaxNumberOfTrainingJobs"):
        return limits
    jobs = min(AUTOTUNE_MAX_JOBS, max(AUTOTUNE_MIN_JOBS, AUTOTUNE_JOBS_PER_PARAMETER * tuned))
    return {**limits, "MaxNumberOfTrainingJobs": max(jobs, limits["MaxParallelTrainingJobs"])}


def completion_criteria(criteria: dict[str, Any] | None) -> dict[str, Any]:
    criteria = dict(criteria or {})
    criteria.setdefault("ConvergenceDetected", {"CompleteOnConvergence": "Enabled"})
    return criteria


def check_auto_parameters_need_autotune(request: dict[str, Any]) -> None:
    config = request["HyperParameterTuningJobConfig"]
    places = [("HyperParameterTuningJobConfig.ParameterRanges", config.get("ParameterRanges"))]
    places += [(f"TrainingJobDefinitions[{d.get('DefinitionName')}].HyperParameterRanges",
                d.get("HyperParameterRanges")) for d in request.get("TrainingJobDefinitions") or []]
    if request.get("TrainingJobDefinition"):
        places.append(("TrainingJobDefinition.HyperParameterRanges",
                       request["TrainingJobDefinition"].get("HyperParameterRanges")))
    for where, ranges in places:
        if (ranges or {}).get("AutoParameters"):
            raise ValidationException(f"{where}.AutoParameters needs Autotune: set Autotune.Mode to Enabled, or "
                                      "give the ranges as Integer, Continuous or Categorical parameter ranges.")
