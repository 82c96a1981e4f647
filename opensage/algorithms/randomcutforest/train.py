"""Random Cut Forest training: ``python -m opensage.algorithms.randomcutforest.train``.

Channels: ``train`` (required, unlabelled; ShardedByS3Key in SageMaker; recordio-protobuf or ``text/csv``) and
``test`` (labelled, 1 = anomaly: ``text/csv;label_size=1`` or recordio with ``label["values"]``). A test row is
called anomalous when its score is more than 3 standard deviations above the mean score of the training rows
(SageMaker's rule); ``eval_metrics`` picks ``accuracy`` and/or ``precision_recall_fscore`` (test precision,
recall, f1 — ``test:f1`` is the tuning objective).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms import firstparty
from opensage.algorithms.firstparty import JobInput, UserError, quality_metric
from opensage.algorithms.randomcutforest import forest, hyperparameters

ALGORITHM = "randomcutforest"
CHANNELS = ("train", "test")
THRESHOLD_ROWS = 100_000  # training rows scored for the anomaly threshold
THRESHOLD_SIGMAS = 3.0

log = logging.getLogger("opensage.algorithms")


def threshold(model: forest.Forest, X: np.ndarray, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    rows = X if len(X) <= THRESHOLD_ROWS else X[rng.choice(len(X), THRESHOLD_ROWS, replace=False)]
    scores = model.score(rows)
    return float(scores.mean() + THRESHOLD_SIGMAS * scores.std())


def report(host: str, scores: np.ndarray, labels: np.ndarray, cutoff: float, metrics: list[str]) -> dict[str, float]:
    predicted = scores > cutoff
    actual = labels > 0.5
    tp = float(np.sum(predicted & actual))
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float(actual.sum()), 1.0)
    values = {"accuracy": float(np.mean(predicted == actual)), "precision": precision, "recall": recall,
              "f1": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)}
    names = (["accuracy"] if "accuracy" in metrics else []) + \
            (["precision", "recall", "f1"] if "precision_recall_fscore" in metrics else [])
    for name in names:
        quality_metric(host, "test", name, values[name])
    return values


def _dense(found: Any, channel: str) -> np.ndarray:
    X = found.dense().astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise UserError(f"ClientError: channel '{channel}' has feature values that are not finite numbers.")
    return X


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    data = job.read_channels(CHANNELS, hp["feature_dim"], supervised=("test",))
    X = _dense(data["train"], "train")
    log.info("Building %d trees of %d samples from %d records", hp["num_trees"], hp["num_samples_per_tree"], len(X))
    model = forest.build(X, hp["num_trees"], hp["num_samples_per_tree"])
    cutoff = threshold(model, X)
    log.info("Anomaly threshold (mean + 3 std of the training scores): %s", cutoff)
    if "test" in data:
        report(job.host, model.score(_dense(data["test"], "test")), data["test"].labels, cutoff, hp["eval_metrics"])
    return firstparty.save_state(job.paths.model, model.arrays(),
                                 {"algorithm": ALGORITHM, "feature_dim": hp["feature_dim"], "threshold": cutoff})


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
