"""SageMaker built-in XGBoost hyperparameters: names, types, ranges, defaults (algorithm mode).

Mirrors the sagemaker-xgboost container's ``hyperparameter_validation.py``: values arrive as strings
(CreateTrainingJob's HyperParameters), are parsed to typed values and range-checked, and every problem is
reported naming the parameter and what it accepts. Keys starting with ``sagemaker_`` and
``_tuning_objective_metric`` are platform keys and are ignored.

With a container version (``OPENSAGE_IMAGE_VERSION``, see ``versions.py``) the names, objectives and metrics are
that container's, and the messages its toolkit's (``Extraneous hyperparameter found: silent``,
``Hyperparameter num_round: could not parse value``); unset keeps the platform's wider, friendlier set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opensage.algorithms.xgboost import versions
from opensage.algorithms.xgboost.versions import ContainerVersion

MAXIMIZE_METRICS = (
    "accuracy", "auc", "aucpr", "balanced_accuracy", "f1", "f1_binary", "f1_macro", "map", "ndcg",
    "precision", "r2", "recall", "precision_macro", "precision_micro", "recall_macro", "recall_micro",
)
MINIMIZE_METRICS = (
    "aft-nloglik", "cox-nloglik", "error", "gamma-deviance", "gamma-nloglik",
    "interval-regression-accuracy", "logloss", "mae", "mape", "merror", "mlogloss", "mphe", "mse",
    "poisson-nloglik", "rmse", "rmsle", "tweedie-nloglik",
)
# Metrics xgboost computes natively (the others are SageMaker's sklearn-based extras).
NATIVE_METRICS = (
    "auc", "aucpr", "map", "ndcg", "aft-nloglik", "cox-nloglik", "error", "gamma-deviance", "gamma-nloglik",
    "interval-regression-accuracy", "logloss", "mae", "mape", "merror", "mlogloss", "mphe", "rmse", "rmsle",
    "tweedie-nloglik", "poisson-nloglik",
)
OBJECTIVES = (
    "binary:logistic", "binary:logitraw", "binary:hinge", "count:poisson", "multi:softmax", "multi:softprob",
    "rank:pairwise", "rank:ndcg", "rank:map", "reg:linear", "reg:squarederror", "reg:logistic", "reg:gamma",
    "reg:pseudohubererror", "reg:squaredlogerror", "reg:absoluteerror", "reg:quantileerror", "reg:tweedie",
    "survival:aft", "survival:cox",
)
TREE_METHODS = ("auto", "exact", "approx", "hist", "gpu_hist")
UPDATERS = (
    "grow_colmaker", "distcol", "grow_histmaker", "grow_local_histmaker", "grow_skmaker", "sync", "refresh",
    "prune", "grow_quantile_histmaker", "shotgun", "coord_descent",
)
ALIASES = {"learning_rate": "eta", "min_split_loss": "gamma", "reg_lambda": "lambda", "reg_alpha": "alpha"}
# Parameters the container accepts but that modern xgboost no longer knows: accepted, then dropped.
DROPPED = ("predictor", "single_precision_histogram", "deterministic_histogram", "dsplit", "lambda_bias",
           "prob_buffer_row", "save_model_on_termination", "_kfold", "_num_cv_round", "_nfold",
           "use_dask_gpu_training")
# Consumed by the trainer, never passed to xgboost.train's params.
TRAINER_KEYS = ("num_round", "early_stopping_rounds", "csv_weights", "save_model_on_termination",
                "_kfold", "_num_cv_round", "_nfold")


class HyperparameterError(ValueError):
    """A hyperparameter is missing, unknown, malformed or out of range."""


@dataclass(frozen=True)
class Interval:
    """A numeric range; None bounds are unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        low = "-inf" if self.low is None else _num(self.low)
        high = "+inf" if self.high is None else _num(self.high)
        return f"{'(' if self.low_open or self.low is None else '['}{low}, {high}{')' if self.high_open or self.high is None else ']'}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Spec:
    """One hyperparameter: how to parse it and what it accepts."""

    name: str
    kind: str  # "int" | "float" | "cat" | "list" | "str"
    range: Interval | tuple[str, ...] | None = None

    def describe(self) -> str:
        if isinstance(self.range, Interval):
            kind = "an integer" if self.kind == "int" else "a number"
            return f"{kind} in {self.range}"
        if isinstance(self.range, tuple):
            prefix = "a comma-separated list of" if self.kind == "list" else "one of"
            return f"{prefix} {', '.join(self.range)}"
        return "a string"


def _int(low: float | None = None, high: float | None = None, *, low_open: bool = False,
         high_open: bool = False) -> Interval:
    return Interval(low, high, low_open, high_open)


_SPECS: tuple[Spec, ...] = (
    Spec("num_round", "int", _int(1)),
    Spec("csv_weights", "int", _int(0, 1)),
    Spec("early_stopping_rounds", "int", _int(1)),
    Spec("booster", "cat", ("gbtree", "gblinear", "dart")),
    Spec("verbosity", "int", _int(0, 3)),
    Spec("nthread", "int", _int(1)),
    Spec("eta", "float", _int(0, 1)),
    Spec("gamma", "float", _int(0)),
    Spec("max_depth", "int", _int(0)),
    Spec("min_child_weight", "float", _int(0)),
    Spec("max_delta_step", "float", _int(0)),
    Spec("subsample", "float", _int(0, 1, low_open=True)),
    Spec("colsample_bytree", "float", _int(0, 1, low_open=True)),
    Spec("colsample_bylevel", "float", _int(0, 1, low_open=True)),
    Spec("colsample_bynode", "float", _int(0, 1, low_open=True)),
    Spec("lambda", "float", _int(0)),
    Spec("alpha", "float", _int(0)),
    Spec("tree_method", "cat", TREE_METHODS),
    Spec("sketch_eps", "float", _int(0, 1, low_open=True, high_open=True)),
    Spec("scale_pos_weight", "float", _int(0, low_open=True)),
    Spec("updater", "list", UPDATERS),
    Spec("dsplit", "cat", ("row", "col")),
    Spec("refresh_leaf", "int", _int(0, 1)),
    Spec("process_type", "cat", ("default", "update")),
    Spec("grow_policy", "cat", ("depthwise", "lossguide")),
    Spec("max_leaves", "int", _int(0)),
    Spec("max_bin", "int", _int(2)),
    Spec("predictor", "cat", ("auto", "cpu_predictor", "gpu_predictor")),
    Spec("monotone_constraints", "str"),
    Spec("interaction_constraints", "str"),
    Spec("sample_type", "cat", ("uniform", "weighted")),
    Spec("normalize_type", "cat", ("tree", "forest")),
    Spec("rate_drop", "float", _int(0, 1)),
    Spec("one_drop", "int", _int(0, 1)),
    Spec("skip_drop", "float", _int(0, 1)),
    Spec("lambda_bias", "float", _int(0, 1)),
    Spec("tweedie_variance_power", "float", _int(1, 2, low_open=True, high_open=True)),
    Spec("objective", "cat", OBJECTIVES),
    Spec("num_class", "int", _int(2)),
    Spec("base_score", "float", _int(0)),
    Spec("eval_metric", "list", None),
    Spec("seed", "int", _int(-(2**31), 2**31 - 1, low_open=True, high_open=True)),
    Spec("num_parallel_tree", "int", _int(1)),
    Spec("save_model_on_termination", "cat", ("true", "false")),
    Spec("aft_loss_distribution", "cat", ("normal", "logistic", "extreme")),
    Spec("aft_loss_distribution_scale", "float", _int(0)),
    Spec("huber_slope", "float", _int(0, low_open=True)),
    Spec("quantile_alpha", "float", _int(0, 1, low_open=True, high_open=True)),
    Spec("max_cat_to_onehot", "int", _int(1)),
    Spec("single_precision_histogram", "cat", ("true", "false")),
    Spec("deterministic_histogram", "cat", ("true", "false")),
    Spec("sampling_method", "cat", ("uniform", "gradient_based")),
    Spec("prob_buffer_row", "float", _int(1, low_open=True)),
    Spec("_kfold", "int", _int(2)),
    Spec("_num_cv_round", "int", _int(1)),
    # Declared only by some container versions (versions.declared_hyperparameters decides who accepts them).
    Spec("silent", "int", _int(0, 1)),
    Spec("_nfold", "int", _int(2)),
    Spec("use_dask_gpu_training", "cat", ("true", "false")),
)
# Accepted by the platform (unset version) only through versions: silent is 0.90-x/1.0-1's.
_VERSIONED_ONLY = ("silent", "_nfold", "use_dask_gpu_training")
SPECS: dict[str, Spec] = {spec.name: spec for spec in _SPECS}

DEFAULTS: dict[str, Any] = {"objective": "reg:squarederror", "booster": "gbtree", "eta": 0.3, "gamma": 0.0,
                            "max_depth": 6, "min_child_weight": 1.0, "subsample": 1.0, "lambda": 1.0,
                            "alpha": 0.0, "tree_method": "auto", "csv_weights": 0, "verbosity": 1}


@dataclass
class XGBoostHyperparameters:
    """Validated hyperparameters split into what the trainer consumes and what xgboost.train gets."""

    num_round: int
    params: dict[str, Any]
    early_stopping_rounds: int | None = None
    csv_weights: bool = False
    eval_metrics: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    tuning_metric: str | None = None  # e.g. "auc" from _tuning_objective_metric "validation:auc"

    @property
    def stopping_metric(self) -> str | None:
        """The metric early stopping watches: the tuning objective, else the last eval_metric."""
        return self.tuning_metric or (self.eval_metrics[-1] if self.eval_metrics else None)

    def maximize(self, metric: str) -> bool:
        return metric.split("@")[0] in MAXIMIZE_METRICS

    @property
    def objective(self) -> str:
        return str(self.params.get("objective", DEFAULTS["objective"]))


def _strip(raw: str) -> str:
    text = str(raw).strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':  # SDK v2 framework estimators JSON-quote strings
        text = text[1:-1]
    return text


def _parse_number(spec: Spec, text: str) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise HyperparameterError(
            f"Hyperparameter {spec.name}: {text!r} is not {'an integer' if spec.kind == 'int' else 'a number'}; "
            f"expected {spec.describe()}.") from None
    if math.isnan(value):
        raise HyperparameterError(f"Hyperparameter {spec.name}: NaN is not allowed; expected {spec.describe()}.")
    if spec.kind == "int":
        if not value.is_integer():
            raise HyperparameterError(
                f"Hyperparameter {spec.name}: {text!r} is not an integer; expected {spec.describe()}.")
        value = int(value)
    assert isinstance(spec.range, Interval)
    if not spec.range.contains(value):
        raise HyperparameterError(
            f"Hyperparameter {spec.name}: value {text} is out of range; expected {spec.describe()}.")
    return value


def _check_metric(metric: str) -> str:
    if "@" in metric:
        name, _, threshold = metric.partition("@")
        if name.strip() not in ("error", "ndcg", "map"):
            raise HyperparameterError(
                f"Hyperparameter eval_metric: {metric!r} is not supported; a threshold '@t' is allowed only "
                "with error, ndcg or map.")
        if threshold.strip().rstrip("-"):
            try:
                float(threshold.strip().rstrip("-"))
            except ValueError:
                raise HyperparameterError(
                    f"Hyperparameter eval_metric: threshold in {metric!r} must be a number.") from None
        return metric
    if metric not in MAXIMIZE_METRICS + MINIMIZE_METRICS:
        raise HyperparameterError(
            f"Hyperparameter eval_metric: {metric!r} is not supported; expected a comma-separated list of "
            f"{', '.join(MAXIMIZE_METRICS + MINIMIZE_METRICS)}.")
    return metric


def _parse_one(spec: Spec, raw: str) -> Any:
    text = _strip(raw)
    if spec.kind in ("int", "float"):
        return _parse_number(spec, text)
    if spec.kind == "cat":
        assert isinstance(spec.range, tuple)
        if text not in spec.range:
            raise HyperparameterError(
                f"Hyperparameter {spec.name}: {text!r} is not valid; expected {spec.describe()}.")
        return text
    if spec.kind == "list":
        items = [item.strip() for item in text.strip("[]").split(",") if item.strip()]
        items = [item.strip("'\"") for item in items]
        if not items:
            raise HyperparameterError(f"Hyperparameter {spec.name}: empty list; expected {spec.describe()}.")
        if spec.name == "eval_metric":
            return [_check_metric(item) for item in items]
        assert isinstance(spec.range, tuple)
        bad = [item for item in items if item not in spec.range]
        if bad:
            raise HyperparameterError(
                f"Hyperparameter {spec.name}: {', '.join(bad)} not valid; expected {spec.describe()}.")
        return items
    return text


def _check_dependencies(values: dict[str, Any]) -> None:
    objective = values.get("objective", DEFAULTS["objective"])
    if "num_round" not in values:
        raise HyperparameterError("Missing required hyperparameter: num_round (an integer >= 1).")
    if objective in ("multi:softmax", "multi:softprob") and "num_class" not in values:
        raise HyperparameterError(
            f"Hyperparameter num_class is required for objective {objective} (an integer >= 2).")
    metrics = values.get("eval_metric", [])
    if "auc" in metrics and not objective.startswith(("binary:", "rank:")):
        raise HyperparameterError(
            "Hyperparameter eval_metric: 'auc' can only be used with binary:* or rank:* objectives.")
    if "aft-nloglik" in metrics and objective != "survival:aft":
        raise HyperparameterError(
            "Hyperparameter eval_metric: 'aft-nloglik' can only be used with objective survival:aft.")
    tree_method = values.get("tree_method")
    if "monotone_constraints" in values and tree_method not in ("exact", "hist"):
        raise HyperparameterError(
            "Hyperparameter monotone_constraints can be used only when tree_method is 'exact' or 'hist'.")
    if "interaction_constraints" in values and tree_method not in ("exact", "hist", "approx"):
        raise HyperparameterError(
            "Hyperparameter interaction_constraints can be used only when tree_method is 'exact', 'hist' "
            "or 'approx'.")


def parse_values(raw: Mapping[str, Any], version: ContainerVersion | None = None) -> dict[str, Any]:
    """Parse and validate each key of ``raw`` (aliases resolved); platform keys are dropped."""
    if version is not None and version.tag is not None:
        return _parse_container_values(raw, version)
    values: dict[str, Any] = {}
    for key, text in raw.items():
        if key.startswith("sagemaker_") or key == "_tuning_objective_metric":
            continue
        name = ALIASES.get(key, key)
        spec = SPECS.get(name) if name not in _VERSIONED_ONLY else None
        if spec is None:
            raise HyperparameterError(
                f"Hyperparameter {key!r} is not supported by the XGBoost algorithm. Supported: "
                f"{', '.join(sorted(n for n in SPECS if not n.startswith('_') and n not in _VERSIONED_ONLY))}.")
        values[name] = _parse_one(spec, text)
    _check_dependencies(values)
    return values


def _parse_container_values(raw: Mapping[str, Any], version: ContainerVersion) -> dict[str, Any]:
    """The container toolkit's order and wording: aliases, missing required, extraneous, parse, range,
    dependencies (sagemaker_algorithm_toolkit/hyperparameter_validation.py)."""
    declared = versions.declared_hyperparameters(version) or frozenset()
    allowed_objectives = versions.objectives(version) or OBJECTIVES
    metrics = versions.container_metrics(version) or frozenset()
    named: dict[str, tuple[str, Any]] = {}
    for key, text in raw.items():
        if key.startswith("sagemaker_") or key == "_tuning_objective_metric":
            continue
        named[ALIASES.get(key, key) if version.has_aliases else key] = (key, text)
    if "num_round" not in named:
        raise HyperparameterError("Missing required hyperparameter: num_round")
    for name, (key, _text) in named.items():
        if name not in declared:
            raise HyperparameterError(f"Extraneous hyperparameter found: {key}")
    values: dict[str, Any] = {}
    for name, (_key, text) in named.items():
        spec = SPECS[name]
        values[name] = _parse_container_value(spec, _strip(text), allowed_objectives, metrics)
    _check_dependencies(values)
    return values


def _parse_container_value(spec: Spec, text: str, objectives: tuple[str, ...], metrics: frozenset[str]) -> Any:
    if spec.kind in ("int", "float"):
        try:
            value: float | int = int(text) if spec.kind == "int" else float(text)
        except ValueError:
            raise HyperparameterError(f"Hyperparameter {spec.name}: could not parse value") from None
        assert isinstance(spec.range, Interval)
        if not spec.range.contains(value):
            raise HyperparameterError(f"Hyperparameter {spec.name}: value {value} not in range {spec.range}")
        return value
    if spec.name == "objective":
        if text not in objectives:
            raise HyperparameterError(f"Hyperparameter objective: {text} is not in {list(objectives)}")
        return text
    if spec.name == "eval_metric":
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item.split("@")[0] not in metrics]
        if bad or not items:
            raise HyperparameterError(f"Hyperparameter eval_metric: value {items} not in range {sorted(metrics)}")
        return [_check_metric(item) for item in items]
    return _parse_one(spec, text)


def _xgboost_params(values: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in values.items() if k not in TRAINER_KEYS and k not in DROPPED}
    params.setdefault("objective", DEFAULTS["objective"])
    if params["objective"] == "reg:linear":  # removed from xgboost; SageMaker treats it as squared error
        params["objective"] = "reg:squarederror"
    if params.get("tree_method") == "gpu_hist":
        params["tree_method"] = "hist"
        params["device"] = "cuda"
    if "updater" in params:
        params["updater"] = ",".join(params["updater"])
    if "eval_metric" in params:
        native = [m for m in params["eval_metric"] if m.split("@")[0] in NATIVE_METRICS]
        if native:
            params["eval_metric"] = native
        else:
            del params["eval_metric"]
    return params


def _tuning_metric(raw: Mapping[str, Any], values: dict[str, Any]) -> str | None:
    """The metric of ``_tuning_objective_metric`` (``validation:auc`` -> ``auc``), added to eval_metric."""
    objective = raw.get("_tuning_objective_metric")
    if not objective:
        return None
    metric = _check_metric(_strip(str(objective)).split(":", 1)[-1])
    metrics = values.setdefault("eval_metric", [])
    if metric not in metrics:
        metrics.append(metric)
    return metric


def parse_hyperparameters(raw: Mapping[str, Any], version: ContainerVersion | None = None,
                          ) -> XGBoostHyperparameters:
    """Validated XGBoost hyperparameters from the HyperParameters map (string values), as the container of
    ``version`` validates them (None or an unset tag: the platform's own rules)."""
    values = parse_values(raw, version)
    tuning_metric = _tuning_metric(raw, values)
    return XGBoostHyperparameters(
        num_round=int(values["num_round"]),
        params=_xgboost_params(values),
        early_stopping_rounds=values.get("early_stopping_rounds"),
        csv_weights=bool(values.get("csv_weights", 0)),
        eval_metrics=list(values.get("eval_metric", [])),
        raw=values,
        tuning_metric=tuning_metric,
    )
