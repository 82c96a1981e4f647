"""Built-in XGBoost training (algorithm mode): ``python -m opensage.algorithms.xgboost.train``.

Reads the SageMaker ``/opt/ml`` tree (``SAGEMAKER_BASE_DIR`` relocates it), trains with ``xgboost.train``
using evals named ``train`` and ``validation``, prints xgboost's eval log (``[i]\\ttrain-rmse:...``) like the
sagemaker-xgboost container, saves ``model/xgboost-model`` with ``Booster.save_model``, and checkpoints every
round to ``checkpoints/xgboost-checkpoint.<i>`` when the job has a CheckpointConfig (resuming from the latest one).
Any failure is written to ``output/failure`` and the process exits non-zero.

``OPENSAGE_IMAGE_VERSION`` (``versions.py``) selects the container version imitated: its hyperparameters, its
eval-log number format and how it writes the model (0.90-x/1.0-1 a pickled Booster, 1.2-x a protocol-4 pickle,
1.3-1+ ``Booster.save_model`` in the installed xgboost's default format). The same code runs under old xgboost
(0.90 ... 1.2, which lack ``TrainingCallback``, ``custom_metric``, ``qid`` and Arrow input): ``_fit_legacy`` uses
the function callbacks, ``feval`` and ``early_stopping_rounds`` those versions have.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms.content import ChannelData, DataError, MlPaths, read_channel, read_json
from opensage.algorithms.xgboost import distributed, import_xgboost_fast, load_booster, save_booster, versions
from opensage.algorithms.xgboost.hyperparameters import (
    NATIVE_METRICS,
    HyperparameterError,
    XGBoostHyperparameters,
    parse_hyperparameters,
)
from opensage.algorithms.xgboost.versions import ContainerVersion

log = logging.getLogger("opensage.algorithms.xgboost")

MODEL_FILENAME = "xgboost-model"
CHECKPOINT_PREFIX = "xgboost-checkpoint"
CHECKPOINTS_TO_KEEP = 5
TRAIN, VALIDATION = "train", "validation"


class UserError(Exception):
    """A problem the user must fix (reported as-is in the failure file)."""


# ---------------------------------------------------------------------------------------------- data


def _channel_config(data_config: dict[str, Any], name: str) -> dict[str, Any]:
    config = data_config.get(name) or {}
    if not isinstance(config, dict):
        raise UserError(f"inputdataconfig.json: channel {name!r} must be an object")
    return config


def load_channels(paths: MlPaths, data_config: dict[str, Any], csv_weights: bool, arrow: bool = True,
                  allow_empty_train: bool = False) -> tuple[ChannelData, ChannelData | None]:
    """The train and (optional) validation data; UserError if train is missing or empty (unless
    ``allow_empty_train``: a host of a distributed job whose shard is empty joins with no rows)."""
    train_cfg = _channel_config(data_config, TRAIN)
    default_type = train_cfg.get("ContentType")

    def read(name: str, weights: bool) -> ChannelData | None:
        cfg = _channel_config(data_config, name)
        # A channel the platform streams (runner.fastfile) is parsed as it downloads: read_channel follows its
        # files in order, and a failed download is a DataError with the download's reason (the job's).
        return read_channel(name, data_dir=paths.data, content_type=cfg.get("ContentType", default_type),
                            input_mode=cfg.get("TrainingInputMode", "File"),
                            record_wrapper=cfg.get("RecordWrapperType"), csv_weights=weights,
                            arrow=arrow)

    train = read(TRAIN, csv_weights)
    if train is None and not allow_empty_train:
        raise UserError(f"Required channel '{TRAIN}' is missing or empty (looked in {paths.data / TRAIN}).")
    validation = None
    if VALIDATION in data_config or (paths.data / VALIDATION).is_dir():
        validation = read(VALIDATION, csv_weights)
        if validation is None and VALIDATION in data_config:
            raise UserError(f"Channel '{VALIDATION}' is configured but has no data "
                            f"(looked in {paths.data / VALIDATION}).")
    if train is None:  # more hosts than objects: XGBoost's collective takes a worker without rows
        log.warning("This host's shard of channel '%s' is empty: it joins the training with no rows", TRAIN)
        width = validation.num_columns if validation is not None else 0
        train = ChannelData(np.empty((0, width), dtype=np.float32), np.empty(0, dtype=np.float32))
    ignored = sorted(set(data_config) - {TRAIN, VALIDATION})
    if ignored:
        log.warning("Ignoring channels not used by XGBoost: %s", ", ".join(ignored))
    return train, validation


def build_dmatrix(data: ChannelData, params: dict[str, Any]) -> Any:
    """A DMatrix of the channel (Arrow tables go in column-wise, without a row-major copy)."""
    import xgboost as xgb

    if xgboost_version(xgb) < (2, 0):  # Arrow tables and qid= are newer: plain arrays, groups set afterwards
        dmatrix = xgb.DMatrix(data.dense_or_sparse(), label=data.labels, weight=data.weights,
                              nthread=params.get("nthread", -1), missing=np.nan)
        if data.qid is not None:
            _, sizes = np.unique(data.qid, return_counts=True)
            dmatrix.set_group(sizes)
    else:
        dmatrix = xgb.DMatrix(data.features, label=data.labels, weight=data.weights, qid=data.qid,
                              nthread=params.get("nthread", -1), missing=np.nan)
    dmatrix.feature_names = None  # CSV/Parquet column names are not features' names in SageMaker models
    dmatrix.feature_types = None
    return dmatrix


def _align_widths(train: ChannelData, validation: ChannelData | None) -> None:
    """Sparse channels can disagree on their widest column; pad both to the same width."""
    if validation is None:
        return
    width = max(train.num_columns, validation.num_columns)
    for data in (train, validation):
        if data.num_columns != width:
            if not hasattr(data.features, "tocsr"):
                raise UserError(f"train has {train.num_columns} feature columns but validation has "
                                f"{validation.num_columns}; both channels need the same columns.")
            data.features.resize((data.num_rows, width))


# ---------------------------------------------------------------------------------------------- metrics


def _class_predictions(predt: np.ndarray) -> np.ndarray:
    if predt.ndim == 2:
        return predt.argmax(axis=1)
    return (predt > 0.5).astype(np.int64) if predt.min() >= 0 and predt.max() <= 1 else np.rint(predt)


def _sklearn_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    from sklearn import metrics as skm

    table: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "accuracy": lambda y, p: skm.accuracy_score(y, _class_predictions(p)),
        "balanced_accuracy": lambda y, p: skm.balanced_accuracy_score(y, _class_predictions(p)),
        "f1": lambda y, p: skm.f1_score(y, _class_predictions(p), average="binary" if p.ndim == 1 else "macro"),
        "f1_binary": lambda y, p: skm.f1_score(y, _class_predictions(p), average="binary"),
        "f1_macro": lambda y, p: skm.f1_score(y, _class_predictions(p), average="macro"),
        "precision": lambda y, p: skm.precision_score(y, _class_predictions(p), zero_division=0),
        "precision_macro": lambda y, p: skm.precision_score(y, _class_predictions(p), average="macro",
                                                            zero_division=0),
        "precision_micro": lambda y, p: skm.precision_score(y, _class_predictions(p), average="micro",
                                                            zero_division=0),
        "recall": lambda y, p: skm.recall_score(y, _class_predictions(p), zero_division=0),
        "recall_macro": lambda y, p: skm.recall_score(y, _class_predictions(p), average="macro", zero_division=0),
        "recall_micro": lambda y, p: skm.recall_score(y, _class_predictions(p), average="micro", zero_division=0),
        "mse": lambda y, p: skm.mean_squared_error(y, p),
        "r2": lambda y, p: skm.r2_score(y, p),
    }
    return table[name]


def custom_metric_for(names: Sequence[str]) -> Callable[[np.ndarray, Any], list[tuple[str, float]]] | None:
    """SageMaker's extra (sklearn-based) eval metrics as one xgboost custom metric; None if none asked."""
    extra = [n for n in names if n.split("@")[0] not in NATIVE_METRICS]
    if not extra:
        return None
    functions = [(n, _sklearn_metric(n)) for n in extra]

    def metric(predt: np.ndarray, dmatrix: Any) -> list[tuple[str, float]]:
        labels = dmatrix.get_label()
        return [(name, float(fn(labels, predt))) for name, fn in functions]

    return metric


# ---------------------------------------------------------------------------------------------- callbacks


def _callback_base() -> type:
    import xgboost as xgb

    return xgb.callback.TrainingCallback


def xgboost_version(xgb: Any) -> tuple[int, int]:
    """(major, minor) of the installed xgboost."""
    parts = str(getattr(xgb, "__version__", "3.0")).split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def is_legacy_xgboost(xgb: Any) -> bool:
    """xgboost before 1.3 (0.90 / 1.0 / 1.2 of the old containers): function callbacks, ``feval``."""
    return not hasattr(xgb.callback, "TrainingCallback")


def make_eval_logger(start_iteration: int, value_format: str = ".5f") -> Any:
    """Print ``[i]\\t<data>-<metric>:<value>`` per round like xgboost's EvaluationMonitor, offset on resume."""

    class EvalLogger(_callback_base()):  # type: ignore[misc]
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            if evals_log:
                parts = [f"[{epoch + start_iteration}]"]
                for data, metrics in evals_log.items():
                    for metric, history in metrics.items():
                        value = history[-1][0] if isinstance(history[-1], tuple) else history[-1]
                        parts.append(f"{data}-{metric}:{value:{value_format}}")
                print("\t".join(parts), flush=True)
            return False

    return EvalLogger()


def make_checkpointer(directory: Path, start_iteration: int) -> Any:
    """Save the booster after every round as ``xgboost-checkpoint.<i>``, keeping the latest few."""

    class Checkpointer(_callback_base()):  # type: ignore[misc]
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            iteration = start_iteration + epoch
            save_booster(model, directory / f"{CHECKPOINT_PREFIX}.{iteration}")
            old = directory / f"{CHECKPOINT_PREFIX}.{iteration - CHECKPOINTS_TO_KEEP}"
            if old.exists():
                old.unlink()
            return False

    return Checkpointer()


def make_early_stopping(hps: XGBoostHyperparameters, data_name: str, xgb: Any, save_best: bool = False) -> Any:
    """Stop when the watched metric (tuning objective or last eval_metric) has not improved on the last
    eval set (validation when present) for early_stopping_rounds; direction from SageMaker's metric lists.
    ``save_best`` (the 1.3-1+ containers) truncates the model to the best round; otherwise the model keeps
    every round and its ``best_iteration`` limits predictions."""
    metric = hps.stopping_metric
    maximize = hps.maximize(metric) if metric else None
    return xgb.callback.EarlyStopping(rounds=hps.early_stopping_rounds, metric_name=metric, data_name=data_name,
                                      maximize=maximize, save_best=save_best)


def checkpoint_directory(paths: Any) -> Path | None:
    """Checkpoint only when the job asked for it (CheckpointConfig -> input/config/checkpointconfig.json,
    whose LocalPath is mapped under the ml root), as SageMaker's container does: saving every round costs."""
    config = paths.root / "input" / "config" / "checkpointconfig.json"
    if not config.exists():
        return None
    import json

    local = json.loads(config.read_text()).get("LocalPath") or "/opt/ml/checkpoints"
    directory = paths.root / local.removeprefix("/opt/ml/") if local.startswith("/opt/ml/") else Path(local)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def latest_checkpoint(directory: Path | None) -> tuple[Path | None, int]:
    """(path of the newest loadable checkpoint, rounds it holds) or (None, 0)."""
    import xgboost as xgb

    if directory is None or not directory.is_dir():
        return None, 0
    pattern = re.compile(rf"^{CHECKPOINT_PREFIX}\.([0-9]+)$")
    found = sorted(((int(m.group(1)), p) for p in directory.iterdir() if (m := pattern.match(p.name))),
                   reverse=True)
    for iteration, path in found:
        try:
            load_booster(path)
        except xgb.core.XGBoostError:
            log.warning("Skipping unreadable checkpoint %s", path)
            continue
        return path, iteration + 1
    return None, 0


# ---------------------------------------------------------------------------------------------- train


def train(paths: MlPaths) -> Path | None:
    """Run one training job in the ``/opt/ml`` tree at ``paths``; return the saved model's path (None: another
    host trains, see ``distributed.py``)."""
    import xgboost as xgb

    version = versions.current()
    hps = parse_hyperparameters(read_json(paths.hyperparameters, {}), version)
    data_config = read_json(paths.inputdataconfig, {})
    hosts, current = distributed.cluster(paths.resourceconfig)
    plan = distributed.mode(hosts, current, data_config, xgb)
    if plan == "idle":
        log.info("Host %s: the train channel is FullyReplicated, so %s trains on all the data alone",
                 current, hosts[0])
        return None
    if plan == "distributed":
        # DMatrices are built inside the collective: their column count is agreed across the hosts there
        # (a host with an empty shard has none of its own).
        with distributed.communicator(xgb, hosts, current):
            return _load_and_fit(paths, hps, data_config, xgb, version, allow_empty_train=True)
    return _load_and_fit(paths, hps, data_config, xgb, version)


def _load_and_fit(paths: MlPaths, hps: XGBoostHyperparameters, data_config: dict[str, Any], xgb: Any,
                  version: ContainerVersion, allow_empty_train: bool = False) -> Path:
    legacy = is_legacy_xgboost(xgb)
    train_data, validation_data = load_channels(paths, data_config, hps.csv_weights,
                                                arrow=xgboost_version(xgb) >= (2, 0),
                                                allow_empty_train=allow_empty_train)
    _align_widths(train_data, validation_data)
    params = adapt_params(dict(hps.params), xgb)
    params.setdefault("nthread", os.cpu_count() or 1)
    log.info("Train matrix has %d rows", train_data.num_rows)
    dtrain = build_dmatrix(train_data, params)
    evals = [(dtrain, TRAIN)]
    if validation_data is not None:
        log.info("Validation matrix has %d rows", validation_data.num_rows)
        evals.append((build_dmatrix(validation_data, params), VALIDATION))
    del train_data, validation_data
    if legacy:
        return _fit_legacy(paths, hps, params, dtrain, evals, xgb, version)
    return _fit(paths, hps, params, dtrain, evals, xgb, version)


def adapt_params(params: dict[str, Any], xgb: Any) -> dict[str, Any]:
    """Parameters in the installed xgboost's terms: ``silent`` (0.90-x/1.0-1) exists only before xgboost 1.0
    (later it becomes ``verbosity=0``); ``device`` only from 2.0 (older ones say ``gpu_hist``)."""
    major = int(str(getattr(xgb, "__version__", "3")).split(".")[0])
    if major >= 1 and "silent" in params:
        if params.pop("silent") and "verbosity" not in params:
            params["verbosity"] = 0
    if major < 2 and params.pop("device", None) == "cuda":
        params["tree_method"] = "gpu_hist"
    return params


def _fit(paths: MlPaths, hps: XGBoostHyperparameters, params: dict[str, Any], dtrain: Any,
         evals: list[tuple[Any, str]], xgb: Any, version: ContainerVersion | None = None) -> Path:
    version = version or ContainerVersion()
    checkpoint_dir = checkpoint_directory(paths)
    resume_from, start = latest_checkpoint(checkpoint_dir)
    if resume_from is not None:
        log.info("Resuming from checkpoint %s (iteration %d)", resume_from, start)
    callbacks = [make_eval_logger(start, version.eval_value_format)]
    if checkpoint_dir is not None:
        callbacks.append(make_checkpointer(checkpoint_dir, start))
    if hps.early_stopping_rounds:
        save_best = version.tag is not None and version.at_least("1.3-1")
        callbacks.append(make_early_stopping(hps, evals[-1][1], xgb, save_best=save_best))
    try:
        booster = xgb.train(params, dtrain, num_boost_round=max(hps.num_round - start, 0), evals=evals,
                            **_metric_argument(xgb, custom_metric_for(hps.eval_metrics), hps.objective),
                            xgb_model=str(resume_from) if resume_from else None,
                            verbose_eval=False, callbacks=callbacks)
    except xgb.core.XGBoostError as exc:
        raise UserError(f"XGBoost training failed: {clean_xgboost_error(exc)}") from None
    return write_model(booster, paths.model / MODEL_FILENAME, version)


def _metric_argument(xgb: Any, metric: Any, objective: str = "") -> dict[str, Any]:
    """``custom_metric`` from xgboost 1.6 (transformed predictions); ``feval`` before, which xgboost 1.2 ...
    1.5 call with raw margins: those are transformed first, as the container's metrics do."""
    if xgboost_version(xgb) >= (1, 6):
        return {"custom_metric": metric}
    if metric is None or xgboost_version(xgb) < (1, 2):
        return {"feval": metric}

    def from_margins(predt: np.ndarray, dmatrix: Any) -> Any:
        return metric(_untransform_margin(predt, objective), dmatrix)

    return {"feval": from_margins}


def _untransform_margin(margin: np.ndarray, objective: str) -> np.ndarray:
    """Predictions from raw margins for an objective's link function."""
    if objective.startswith("multi:"):
        shifted = np.exp(margin - margin.max(axis=1, keepdims=True)) if margin.ndim == 2 else margin
        return shifted / shifted.sum(axis=1, keepdims=True) if margin.ndim == 2 else margin
    if objective in ("binary:logistic", "reg:logistic"):
        return 1.0 / (1.0 + np.exp(-margin))
    if objective in ("count:poisson", "reg:gamma", "reg:tweedie", "survival:cox"):
        return np.exp(margin)
    return margin


def _fit_legacy(paths: MlPaths, hps: XGBoostHyperparameters, params: dict[str, Any], dtrain: Any,
                evals: list[tuple[Any, str]], xgb: Any, version: ContainerVersion) -> Path:
    """Training under xgboost 0.90 ... 1.2: function callbacks (``env``), ``feval``, ``early_stopping_rounds``."""
    checkpoint_dir = checkpoint_directory(paths)
    resume_from, start = latest_checkpoint(checkpoint_dir)
    value_format = version.eval_value_format

    def log_evaluation(env: Any) -> None:
        if env.evaluation_result_list:
            parts = [f"[{env.iteration + start}]"]
            parts += [f"{name}:{value:{value_format}}" for name, value, *_ in env.evaluation_result_list]
            print("\t".join(parts), flush=True)

    def checkpoint(env: Any) -> None:
        iteration = start + env.iteration
        save_booster(env.model, checkpoint_dir / f"{CHECKPOINT_PREFIX}.{iteration}")  # type: ignore[operator]
        old = checkpoint_dir / f"{CHECKPOINT_PREFIX}.{iteration - CHECKPOINTS_TO_KEEP}"  # type: ignore[operator]
        if old.exists():
            old.unlink()

    callbacks = [log_evaluation] + ([checkpoint] if checkpoint_dir is not None else [])
    kwargs: dict[str, Any] = {}
    if hps.early_stopping_rounds:  # watches the last metric of the last eval set, as these versions do
        kwargs["early_stopping_rounds"] = hps.early_stopping_rounds
        kwargs["maximize"] = bool(hps.stopping_metric and hps.maximize(hps.stopping_metric))
    try:
        booster = xgb.train(params, dtrain, num_boost_round=max(hps.num_round - start, 0), evals=evals,
                            **_metric_argument(xgb, custom_metric_for(hps.eval_metrics), hps.objective),
                            xgb_model=str(resume_from) if resume_from else None,
                            verbose_eval=False, callbacks=callbacks, **kwargs)
    except xgb.core.XGBoostError as exc:
        raise UserError(f"XGBoost training failed: {clean_xgboost_error(exc)}") from None
    return write_model(booster, paths.model / MODEL_FILENAME, version)


def write_model(booster: Any, target: Path, version: ContainerVersion) -> Path:
    """Write ``xgboost-model`` as ``version``'s container does (XC algorithm_mode/train.py): a pickled Booster
    (0.90-x, 1.0-1; protocol 4 for 1.2-x), ``Booster.save_model`` with no extension (1.3-1+: the installed
    xgboost's default format, legacy binary up to 1.7, UBJSON from 2.1), the platform's UBJSON when unset."""
    import pickle

    target.parent.mkdir(parents=True, exist_ok=True)
    writer = version.model_writer
    tmp = target.with_name(f".{target.name}.tmp")
    if writer in ("pickle", "pickle4"):
        with open(tmp, "wb") as stream:
            pickle.dump(booster, stream, protocol=4 if writer == "pickle4" else pickle.DEFAULT_PROTOCOL)
    elif writer == "save_model":
        booster.save_model(str(tmp))
    else:
        save_booster(booster, target)
        return target
    os.replace(tmp, target)
    return target


def clean_xgboost_error(exc: BaseException) -> str:
    """The useful part of an XGBoostError (no timestamps, source paths or native stack trace)."""
    text = str(exc).split("Stack trace:")[0].strip()
    lines = [re.sub(r"^\[[0-9:]+\]\s+\S+:\d+:\s*", "", line).strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line)


# ---------------------------------------------------------------------------------------------- process


def write_failure(paths: MlPaths, message: str) -> None:
    """Write ``output/failure`` (the platform copies its first 1024 characters to FailureReason)."""
    try:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(message)
    except OSError:
        log.exception("Could not write %s", paths.failure)


def main(argv: Sequence[str] | None = None) -> int:
    """Process entry point: 0 on success; on failure write ``output/failure`` and return non-zero."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s", stream=sys.stderr)
    paths = MlPaths.from_env()
    try:
        import_xgboost_fast()
        model = train(paths)
    except (HyperparameterError, DataError, UserError) as exc:
        message = str(exc)
        log.error("%s", message)
        write_failure(paths, message)
        return 1
    except Exception as exc:  # an algorithm bug: keep the traceback for the logs
        log.error("Algorithm error\n%s", traceback.format_exc())
        write_failure(paths, f"AlgorithmError: {type(exc).__name__}: {exc}")
        return 2
    if model is not None:
        log.info("Model saved to %s", model)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
