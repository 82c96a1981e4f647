"""K-means training: ``python -m opensage.algorithms.kmeans.train`` in a SageMaker ``/opt/ml``.

Channels: ``train`` (required; ShardedByS3Key in SageMaker's examples) and ``test`` (``test:msd`` /
``test:ssd``); recordio-protobuf (the default) or ``text/csv`` (every column a feature unless
``label_size=1``). ``half_life_time_size`` is validated; points are not decayed (scikit-learn's mini-batch
k-means has no decay).
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
from opensage.algorithms.formats import Dataset
from opensage.algorithms.hosts import trains_here
from opensage.algorithms.kmeans import hyperparameters

ALGORITHM = "kmeans"
CHANNELS = ("train", "test")
AUTO_CENTER_FACTOR = 10
AUTO_TRIALS = 10
POLISH_MAX_VALUES = 50_000_000  # rows x features up to which Lloyd's iterations over the data finish the fit
SKLEARN_INIT = {"random": "random", "kmeans++": "k-means++"}

log = logging.getLogger("opensage.algorithms")


def _load(job: JobInput, feature_dim: int) -> dict[str, Dataset]:
    return job.read_channels(CHANNELS, feature_dim, supervised=False)


def squared_distances(X: Any, centers: np.ndarray) -> np.ndarray:
    """(n, k) squared Euclidean distances (dense or CSR rows), |x|^2 - 2 x.c + |c|^2 in numpy: serving needs no
    scikit-learn import (its first import would stall the model server's first request)."""
    if hasattr(X, "tocsr"):
        row_norms = np.asarray(X.multiply(X).sum(axis=1)).ravel()
    else:
        X = np.asarray(X, dtype=np.float64)
        row_norms = np.einsum("ij,ij->i", X, X)
    cross = np.asarray(X @ centers.T)
    return np.maximum(row_norms[:, None] - 2.0 * cross + np.einsum("ij,ij->i", centers, centers)[None, :], 0.0)


def fit_centers(X: np.ndarray, hp: dict[str, Any], seed: int = 0) -> np.ndarray:
    """Stage 1 (mini-batch k-means with extra centers) then stage 2 (weighted local Lloyd's) → (k, d)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k, rows = hp["k"], X.shape[0]
    if rows < k:
        raise UserError(f"ClientError: k is {k} but channel 'train' has only {rows} records.")
    factor = hp["extra_center_factor"] or AUTO_CENTER_FACTOR
    extra = max(k, min(k * factor, rows))
    stage1 = MiniBatchKMeans(n_clusters=extra, init=SKLEARN_INIT[hp["init_method"]], n_init=1,
                             batch_size=min(hp["mini_batch_size"], rows), max_iter=hp["epochs"], random_state=seed)
    stage1.fit(X)
    centers = stage1.cluster_centers_.astype(np.float64)
    counts = np.bincount(stage1.predict(X), minlength=extra).astype(np.float64)
    keep = counts > 0
    if keep.sum() >= k:
        centers, counts = centers[keep], counts[keep]
    else:  # fewer occupied centers than k: keep empty ones with a tiny weight so k centers exist
        counts = np.maximum(counts, 1e-6)
    log.info("Stage 1: %d centers from %d records; reducing to k=%d with local Lloyd's", len(centers), rows, k)
    if len(centers) != k:
        stage2 = KMeans(n_clusters=k, init=SKLEARN_INIT[hp["local_lloyd_init_method"]],
                        n_init=hp["local_lloyd_num_trials"] or AUTO_TRIALS, max_iter=hp["local_lloyd_max_iter"],
                        tol=hp["local_lloyd_tol"], random_state=seed)
        centers = stage2.fit(centers, sample_weight=counts).cluster_centers_.astype(np.float64)
    if X.size <= POLISH_MAX_VALUES:
        # The rows are in memory anyway: Lloyd's iterations over them from the reduced centers can only lower
        # the sum of squared distances (SageMaker stops at the reduction; this gets within scikit-learn's).
        polish = KMeans(n_clusters=k, init=centers, n_init=1, max_iter=hp["local_lloyd_max_iter"],
                        tol=hp["local_lloyd_tol"])
        centers = polish.fit(X).cluster_centers_.astype(np.float64)
    return centers


def report(host: str, channel: str, X: Any, centers: np.ndarray, metrics: list[str]) -> dict[str, float]:
    closest = squared_distances(X, centers).min(axis=1)
    values = {"msd": float(closest.mean()), "ssd": float(closest.sum())}
    for name in metrics:
        quality_metric(host, channel, name, values[name], kind="loss")
    return values


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    if not trains_here(job.paths.resourceconfig, job.paths.model):  # algo-1 reads every shard
        return job.paths.model
    data = _load(job, hp["feature_dim"])
    if "train" not in data:
        raise UserError("ClientError: channel 'train' is required.")
    X = data["train"].dense()
    if not np.all(np.isfinite(X)):
        raise UserError("ClientError: channel 'train' has feature values that are not finite numbers.")
    centers = fit_centers(X, hp)
    report(job.host, "train", X, centers, hp["eval_metrics"])
    if "test" in data:
        report(job.host, "test", data["test"].features, centers, hp["eval_metrics"])
    return firstparty.save_state(job.paths.model, {"centroids": centers},
                                 {"algorithm": ALGORITHM, "feature_dim": hp["feature_dim"], "k": hp["k"]})


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
