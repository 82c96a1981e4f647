"""Linear learner training: ``python -m opensage.algorithms.linear_learner.train`` in a SageMaker ``/opt/ml``.

Channels: ``train`` (required), ``validation`` (model selection, early stopping, threshold calibration) and
``test`` (final metrics); recordio-protobuf (the default) or ``text/csv`` with the label first.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms import firstparty
from opensage.algorithms.firstparty import JobInput, UserError, quality_metric
from opensage.algorithms.formats import Dataset, read_training_channel
from opensage.algorithms.hosts import trains_here
from opensage.algorithms.linear_learner import evaluation, hyperparameters, solver
from opensage.algorithms.linear_learner.hyperparameters import BINARY, MULTICLASS, REGRESSOR

ALGORITHM = "linear-learner"
CHANNELS = ("train", "validation", "test")
AUTO_MODELS = 8
BASE_RATES = {"adam": 0.1, "rmsprop": 0.01, "sgd": 0.1}
RATE_STEPS = (1.0, 3.0, 1 / 3, 1 / 10, 10.0)
AUTO_WD = (0.0, 1e-4, 1e-3, 1e-2)
MAX_DENSE_BYTES = 4 << 30
POLISH_MAX_VALUES = 50_000_000  # rows x features up to which models are polished by full-batch L-BFGS
POLISH_ITERATIONS = 200

log = logging.getLogger("opensage.algorithms")


# ---------------------------------------------------------------------------------------------- data


def _load(job: JobInput) -> dict[str, Dataset]:
    job.check_channels(CHANNELS)
    data: dict[str, Dataset] = {}
    for name in CHANNELS:
        if name not in job.data_config:
            continue
        found = read_training_channel(name, job.paths.data, job.data_config[name], supervised=True)
        if found is None:
            raise UserError(f"ClientError: channel '{name}' has no data (looked in {job.paths.data / name}).")
        data[name] = found
    return data


def _check(data: dict[str, Dataset], hp: dict[str, Any]) -> int:
    """The feature dimension; ClientError for widths or labels that do not fit the hyperparameters."""
    width = data["train"].num_columns
    if hp["feature_dim"] is not None and hp["feature_dim"] != width:
        raise UserError(f"ClientError: feature_dim is {hp['feature_dim']} but the records of channel 'train' "
                        f"have {width} features.")
    for name, dataset in data.items():
        if dataset.num_columns != width and not (dataset.is_sparse and dataset.num_columns < width):
            raise UserError(f"ClientError: channel '{name}' has {dataset.num_columns} features, channel "
                            f"'train' has {width}.")
        if dataset.is_sparse and dataset.num_columns < width:
            dataset.features.resize((dataset.num_rows, width))
        if dataset.num_rows * width * 4 > MAX_DENSE_BYTES:
            raise UserError(f"ClientError: channel '{name}' ({dataset.num_rows} x {width}) is too large for "
                            f"this platform's in-memory linear learner.")
        _check_labels(name, dataset.labels, hp)  # type: ignore[arg-type]
    return width


def _check_labels(channel: str, labels: np.ndarray, hp: dict[str, Any]) -> None:
    if not np.all(np.isfinite(labels)):
        raise UserError(f"ClientError: channel '{channel}' has labels that are not finite numbers.")
    kind = hp["predictor_type"]
    if kind == BINARY and not np.isin(labels, (0.0, 1.0)).all():
        bad = labels[~np.isin(labels, (0.0, 1.0))][0]
        raise UserError(f"ClientError: predictor_type binary_classifier needs labels 0 or 1; channel "
                        f"'{channel}' has label {bad:g}.")
    if kind == MULTICLASS:
        classes = hp["num_classes"]
        bad_mask = (labels != np.round(labels)) | (labels < 0) | (labels >= classes)
        if bad_mask.any():
            raise UserError(f"ClientError: with num_classes={classes} labels must be integers 0..{classes - 1}; "
                            f"channel '{channel}' has label {labels[bad_mask][0]:g}.")


# ---------------------------------------------------------------------------------------------- setup


class Scaler:
    """Feature (and, for regression, label) shift and scale, estimated on ``num_point_for_scaler`` rows."""

    def __init__(self, X: np.ndarray, y: np.ndarray, hp: dict[str, Any], rng: np.random.Generator) -> None:
        sample = rng.choice(len(X), size=min(len(X), hp["num_point_for_scaler"]), replace=False)
        Xs, ys = X[sample].astype(np.float64), y[sample].astype(np.float64)
        unbias = hp["unbias_data"] if hp["unbias_data"] is not None else hp["use_bias"]
        normalize = hp["normalize_data"] is not False
        self.mean = Xs.mean(axis=0) if unbias else np.zeros(X.shape[1])
        std = Xs.std(axis=0) if normalize else np.ones(X.shape[1])
        self.scale = np.where(std > 1e-12, std, 1.0)
        regression = hp["predictor_type"] == REGRESSOR
        unbias_label = hp["unbias_label"] if hp["unbias_label"] is not None else (regression and hp["use_bias"])
        normalize_label = hp["normalize_label"] if hp["normalize_label"] is not None else regression
        self.y_mean = float(ys.mean()) if regression and unbias_label else 0.0
        y_std = float(ys.std()) if regression and normalize_label else 1.0
        self.y_scale = y_std if y_std > 1e-12 else 1.0

    def features(self, X: np.ndarray) -> np.ndarray:
        out = X.astype(np.float64)  # the one new array (X - mean, then / scale, made two)
        out -= self.mean
        out /= self.scale
        return out

    def labels(self, y: np.ndarray, kind: str) -> np.ndarray:
        return (y - self.y_mean) / self.y_scale if kind == REGRESSOR else y.astype(np.float64)

    def loss_scale(self, loss: str) -> float:
        """Factor from a loss on normalised labels to label units (exact for squared / absolute / quantile)."""
        return self.y_scale ** 2 if loss in ("squared_loss", "eps_insensitive_squared_loss") else self.y_scale

    def unfold(self, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights and bias in the original feature (and label) space: ``x @ W + b``."""
        weights = W / self.scale[:, None]
        bias = b - self.mean @ weights
        return weights * self.y_scale, bias * self.y_scale + self.y_mean


def candidates(hp: dict[str, Any], tuning: bool) -> list[solver.Candidate]:
    """The parallel models: the given settings first, then nearby learning rates / wd where those are auto."""
    base = hp["learning_rate"] or BASE_RATES[hp["optimizer"]]
    rates = (base,) if hp["learning_rate"] is not None else tuple(base * step for step in RATE_STEPS)
    wds = (hp["wd"],) if hp["wd"] is not None else AUTO_WD
    l1s = (hp["l1"],) if hp["l1"] is not None else (0.0,)
    grid = sorted(itertools.product(range(len(rates)), range(len(wds)), range(len(l1s))), key=lambda t: (sum(t), t))
    count = 1 if tuning else (hp["num_models"] or min(AUTO_MODELS, len(grid)))
    chosen = [grid[i % len(grid)] for i in range(count)]
    return [solver.Candidate(rates[r], wds[w], l1s[j]) for r, w, j in chosen]


def settings_for(hp: dict[str, Any], steps_per_epoch: int) -> solver.Settings:
    schedule = None
    if hp["use_lr_scheduler"]:
        step = hp["lr_scheduler_step"] or max(1, steps_per_epoch)
        factor = hp["lr_scheduler_factor"] or 0.9
        base = hp["learning_rate"] or BASE_RATES[hp["optimizer"]]
        minimum = (hp["lr_scheduler_minimum_lr"] or 1e-5) / base
        schedule = (step, factor, minimum)
    return solver.Settings(
        optimizer=hp["optimizer"], epochs=hp["epochs"], mini_batch_size=hp["mini_batch_size"],
        beta_1=hp["beta_1"] if hp["beta_1"] is not None else 0.9,
        beta_2=hp["beta_2"] if hp["beta_2"] is not None else 0.999,
        momentum=hp["momentum"] if hp["momentum"] is not None else 0.0, use_bias=hp["use_bias"],
        bias_lr_mult=hp["bias_lr_mult"] or 1.0, bias_wd_mult=hp["bias_wd_mult"] or 0.0,
        init_method=hp["init_method"], init_scale=hp["init_scale"], init_sigma=hp["init_sigma"],
        init_bias=hp["init_bias"], lr_schedule=schedule, patience=hp["early_stopping_patience"],
        tolerance=hp["early_stopping_tolerance"])


def sample_weights(y: np.ndarray, hp: dict[str, Any]) -> np.ndarray:
    """Per-row weights: positive_example_weight_mult (binary) or balanced classes (multiclass)."""
    weights = np.ones(len(y))
    if hp["predictor_type"] == BINARY:
        mult = hp["positive_example_weight_mult"]
        if mult in ("balanced", None):  # balanced: both classes weigh equally in the loss; auto: 1.0
            positives = float(y.sum())
            mult = (len(y) - positives) / positives if positives and mult == "balanced" else 1.0
        weights[y == 1] = float(mult)
    elif hp["predictor_type"] == MULTICLASS and hp["balance_multiclass_weights"]:
        counts = np.bincount(y.astype(np.int64), minlength=hp["num_classes"]).astype(np.float64)
        per_class = np.where(counts > 0, len(y) / (hp["num_classes"] * np.maximum(counts, 1)), 0.0)
        weights = per_class[y.astype(np.int64)]
    return weights


def make_loss(hp: dict[str, Any]) -> solver.Loss:
    return solver.Loss(hp["loss"], margin=hp["margin"], insensitivity=hp["loss_insensitivity"],
                       quantile=hp["quantile"], delta=hp["huber_delta"])


# ---------------------------------------------------------------------------------------------- model


class LinearModel:
    """The selected model in the original feature space (what serve.py loads)."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, kind: str, loss: str, threshold: float) -> None:
        self.weights, self.bias, self.kind, self.loss, self.threshold = weights, bias, kind, loss, threshold

    def raw(self, X: Any) -> np.ndarray:
        if isinstance(X, np.ndarray) and X.dtype != self.weights.dtype:
            # float32 @ float64 takes numpy's slow non-BLAS loop (~4x): rows are cast a block at a time, never
            # as one copy of X (a fresh array that size costs its first touch: see solver.fit)
            return np.concatenate([X[start:start + solver.ROW_BLOCK].astype(self.weights.dtype) @ self.weights
                                   for start in range(0, max(len(X), 1), solver.ROW_BLOCK)]) + self.bias
        return np.asarray(X @ self.weights) + self.bias

    def outputs(self, X: Any, raw: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``score`` (probability, class probabilities or regression value) and ``predicted_label``
        (from ``raw`` scores when the caller has them)."""
        raw = self.raw(X) if raw is None else raw
        if self.kind == REGRESSOR:
            return {"score": raw[:, 0]}
        if self.kind == MULTICLASS:
            probabilities = solver.softmax(raw)
            return {"score": probabilities, "predicted_label": probabilities.argmax(axis=1).astype(np.float64)}
        score = solver.sigmoid(raw[:, 0]) if self.loss == "logistic" else raw[:, 0]
        return {"score": score, "predicted_label": (score > self.threshold).astype(np.float64)}


def report(host: str, channel: str, model: LinearModel, data: Dataset, hp: dict[str, Any],
           loss: solver.Loss) -> None:
    """Log SageMaker's metrics of ``model`` on one channel."""
    labels = data.labels
    assert labels is not None
    raw = model.raw(data.features)
    metrics: list[evaluation.Metric] = []
    outputs = model.outputs(data.features, raw)
    if model.kind == BINARY:
        metrics = evaluation.binary_metrics(labels, outputs["score"], outputs["predicted_label"], hp["f_beta"])
    elif model.kind == MULTICLASS:
        metrics = evaluation.multiclass_metrics(labels, outputs["score"], hp["accuracy_top_k"], hp["f_beta"])
    else:
        metrics = evaluation.regression_metrics(labels, outputs["score"])
    metrics.append(evaluation.Metric(evaluation.objective_name(model.loss),
                                     float(np.mean(loss.value(raw[None], labels)))))
    for metric in metrics:
        quality_metric(host, channel, metric.name, metric.value, kind=metric.kind)


def _select(models: solver.ParallelModels, scaler: Scaler, hp: dict[str, Any], loss: solver.Loss,
            data: Dataset, channel: str) -> tuple[LinearModel, int]:
    """The best parallel model on ``data`` (validation, else train), with its calibrated threshold."""
    assert data.labels is not None
    limit = hp["num_calibration_samples"] or len(data.labels)
    X, y = data.features[:limit], data.labels[:limit]
    default = 0.5 if hp["loss"] == "logistic" else 0.0
    # models with the same weights as an earlier one (polished to one optimum) have its rank: the first wins
    first, _ = solver.distinct_models(models)
    chosen = [(int(index), LinearModel(*scaler.unfold(*models.select(index)), hp["predictor_type"], hp["loss"],
                                       default)) for index in first]
    kwargs = {"beta": hp["f_beta"], "target_precision": hp["target_precision"],
              "target_recall": hp["target_recall"], "default": default}
    width = chosen[0][1].weights.shape[1]
    together = LinearModel(np.concatenate([model.weights for _, model in chosen], axis=1),
                           np.zeros(width * len(chosen)), hp["predictor_type"], hp["loss"], default)
    raws = together.raw(X)  # every model's scores in one pass over X
    best: tuple[float, int, LinearModel] | None = None
    for j, (index, model) in enumerate(chosen):
        raw = raws[:, j * width:(j + 1) * width] + model.bias
        loss_value = float(np.mean(loss.value(raw[None], y)))
        score = model.outputs(X, raw)["score"]
        rank, threshold = evaluation.selection(hp["predictor_type"], hp["binary_classifier_model_selection_criteria"],
                                               y, score if model.kind == BINARY else raw, loss_value, **kwargs)
        if not np.isfinite(rank):
            continue
        if best is None or rank > best[0]:
            if model.kind == BINARY:
                model.threshold = threshold
            best = (rank, index, model)
    if best is None:
        raise UserError("ClientError: training diverged for every model (non-finite loss); lower learning_rate "
                        "or normalize the data.")
    log.info("Selected model %d of %d on channel %s (criterion %s)", best[1], models.W.shape[0], channel,
             hp["binary_classifier_model_selection_criteria"] if best[2].kind == BINARY else "objective loss")
    return best[2], best[1]


# ---------------------------------------------------------------------------------------------- train


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    if not trains_here(job.paths.resourceconfig, job.paths.model):  # algo-1 reads every shard
        return job.paths.model
    tuning = firstparty.tuning_objective(job.raw_hyperparameters) is not None
    data = _load(job)
    if "train" not in data:
        raise UserError("ClientError: channel 'train' is required.")
    width = _check(data, hp)
    rng = np.random.default_rng(0)
    train_data = data["train"]
    X = train_data.dense()
    y = train_data.labels
    assert y is not None
    scaler = Scaler(X, y, hp, rng)
    kind = hp["predictor_type"]
    outputs = hp["num_classes"] if kind == MULTICLASS else 1
    loss = make_loss(hp)
    validation = data.get("validation")
    watched = None
    if validation is not None:
        assert validation.labels is not None
        watched = (scaler.features(validation.dense()), scaler.labels(validation.labels, kind))
    models_to_train = candidates(hp, tuning)
    steps = -(-len(y) // hp["mini_batch_size"])
    log.info("Training %d parallel model(s) on %d rows x %d features for up to %d epochs",
             len(models_to_train), len(y), width, hp["epochs"])
    objective = evaluation.objective_name(hp["loss"])
    unit = scaler.loss_scale(hp["loss"])  # per-epoch losses are on normalised labels: report label units

    def on_epoch(epoch: int, train_loss: np.ndarray, validation_loss: np.ndarray | None) -> None:
        quality_metric(job.host, "train", objective, unit * float(np.min(train_loss)), kind="loss", epoch=epoch)
        if validation_loss is not None:
            quality_metric(job.host, "validation", objective, unit * float(np.min(validation_loss)), kind="loss",
                           epoch=epoch)
        firstparty.progress_metric(job.host, 100.0 * (epoch + 1) / hp["epochs"])

    Xs, ys, weights = scaler.features(X), scaler.labels(y, kind), sample_weights(y, hp)
    settings = settings_for(hp, steps)
    settings.polish = hp["loss"] in solver.SMOOTH_LOSSES and Xs.size <= POLISH_MAX_VALUES
    settings.polish_iterations = POLISH_ITERATIONS
    models = solver.fit(Xs, ys, weights, loss, outputs, models_to_train, settings, watched, on_epoch)
    selected, _ = _select(models, scaler, hp, loss, validation or train_data,
                          "validation" if validation is not None else "train")
    for channel in CHANNELS:
        if channel in data:
            report(job.host, channel, selected, data[channel], hp, loss)
    return firstparty.save_state(
        job.paths.model, {"weights": selected.weights, "bias": selected.bias},
        {"algorithm": ALGORITHM, "predictor_type": kind, "loss": hp["loss"], "threshold": selected.threshold,
         "feature_dim": width, "num_classes": outputs if kind == MULTICLASS else None})


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
