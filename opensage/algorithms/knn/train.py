"""k-NN training: ``python -m opensage.algorithms.knn.train`` in a SageMaker ``/opt/ml``.

Channels: ``train`` (required, labelled: ``label["values"]`` in recordio-protobuf, the first column of
``text/csv;label_size=1``) and ``test`` (labelled; ``test:accuracy`` for a classifier, ``test:mse`` for a
regressor). The model is the sampled rows' index, their labels and the projection matrix, if any.
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
from opensage.algorithms.knn import hyperparameters, index

ALGORITHM = "knn"
CHANNELS = ("train", "test")

log = logging.getLogger("opensage.algorithms")


class KNNModel:
    """Projection (optional) + index + labels; ``neighbours`` and ``predict`` are what serving answers."""

    def __init__(self, idx: index.Index, labels: np.ndarray, projection: np.ndarray | None, k: int,
                 predictor_type: str, feature_dim: int) -> None:
        self.index, self.labels, self.projection = idx, labels, projection
        self.k, self.predictor_type, self.feature_dim = k, predictor_type, feature_dim

    def prepare(self, features: Any) -> np.ndarray:
        rows = features.toarray() if hasattr(features, "toarray") else np.asarray(features)
        rows = np.asarray(rows, dtype=np.float32)
        if self.projection is not None:
            rows = rows @ self.projection
        if self.index.metric == "COSINE":
            rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows

    def neighbours(self, features: Any) -> tuple[np.ndarray, np.ndarray]:
        """(labels (n, k), distances (n, k)), nearest first: L2 distances, or inner products / cosines."""
        costs, ids = self.index.search(self.prepare(features), self.k)
        distances = np.sqrt(costs) if self.index.metric == "L2" else -costs
        return self.labels[ids], distances

    def vote(self, labels: np.ndarray) -> np.ndarray:
        if self.predictor_type == "regressor":
            return labels.mean(axis=1)
        classes, inverse = np.unique(labels, return_inverse=True)
        counts = np.zeros((labels.shape[0], len(classes)))
        np.add.at(counts, (np.repeat(np.arange(labels.shape[0]), labels.shape[1]), inverse.ravel()), 1.0)
        return classes[counts.argmax(axis=1)]  # argmax: ties go to the smallest label, as scikit-learn's

    def predict(self, features: Any) -> np.ndarray:
        return self.vote(self.neighbours(features)[0])

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"labels": self.labels, **self.index.arrays()}
        if self.projection is not None:
            arrays["projection"] = self.projection
        meta = {"algorithm": ALGORITHM, "feature_dim": self.feature_dim, "k": self.k,
                "predictor_type": self.predictor_type, "index_type": self.index.kind,
                "index_metric": self.index.metric, "nprobe": self.index.nprobe}
        return arrays, meta

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> KNNModel:
        idx = index.Index.from_arrays(meta["index_type"], meta["index_metric"], int(meta["nprobe"]), arrays)
        return cls(idx, arrays["labels"], arrays.get("projection"), int(meta["k"]), meta["predictor_type"],
                   int(meta["feature_dim"]))


def fit(X: Any, y: np.ndarray, hp: dict[str, Any], seed: int = 0) -> KNNModel:
    """Sample ``sample_size`` rows (without replacement), reduce, index."""
    rng = np.random.default_rng(seed)
    if X.shape[0] > hp["sample_size"]:
        keep = np.sort(rng.choice(X.shape[0], size=hp["sample_size"], replace=False))
        X, y = X[keep], y[keep]
    log.info("Indexing %d sampled records with %s (%s)", X.shape[0], hp["index_type"], hp["index_metric"])
    projection = None
    if hp["dimension_reduction_type"]:
        projection = index.projection(hp["dimension_reduction_type"], hp["feature_dim"],
                                      hp["dimension_reduction_target"], seed)
    shell = KNNModel(index.Index("faiss.Flat", hp["index_metric"], np.zeros((0, 1), np.float32)), y, projection,
                     hp["k"], hp["predictor_type"], hp["feature_dim"])
    rows = shell.prepare(X)
    shell.index = index.build(hp["index_type"], hp["index_metric"], rows, hp["faiss_index_ivf_nlists"],
                              hp["faiss_index_pq_m"], seed)
    return shell


def report(host: str, model: KNNModel, X: Any, y: np.ndarray) -> dict[str, float]:
    predicted = np.concatenate([model.predict(X[i:i + 5000]) for i in range(0, X.shape[0], 5000)])
    if model.predictor_type == "classifier":
        value = float(np.mean(predicted == y))
        quality_metric(host, "test", "accuracy", value)
        return {"accuracy": value}
    value = float(np.mean((predicted - y) ** 2))
    quality_metric(host, "test", "mse", value, kind="loss")
    return {"mse": value}


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    data = job.read_channels(CHANNELS, hp["feature_dim"], supervised=True)
    X, y = data["train"].features, data["train"].labels
    values = X.data if hasattr(X, "tocsr") else X
    if not np.all(np.isfinite(values)) or not np.all(np.isfinite(y)):
        raise UserError("ClientError: channel 'train' has values that are not finite numbers.")
    model = fit(X, y, hp)
    if "test" in data:
        report(job.host, model, data["test"].features, data["test"].labels)
    arrays, meta = model.state()
    return firstparty.save_state(job.paths.model, arrays, meta)


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
