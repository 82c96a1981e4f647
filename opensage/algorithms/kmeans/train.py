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


def _nearest(batch: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of each row's nearest center: argmin |c|^2 - 2 x.c (|x|^2 is the same for every center of a row),
    as one product of the batch and a ones column with [-2c, |c|^2] (a third less than the product, a scaling
    and an add over the batch x centers result: stage 1 runs this for every batch)."""
    rows, width = batch.shape
    augmented = np.empty((rows, width + 1), dtype=batch.dtype)
    augmented[:, :width] = batch
    augmented[:, width] = 1.0
    weights = np.empty((centers.shape[0], width + 1), dtype=batch.dtype)
    np.multiply(centers, -2.0, out=weights[:, :width], casting="unsafe")
    weights[:, width] = np.einsum("ij,ij->i", centers, centers)
    return np.argmin(augmented @ weights.T, axis=1)


def minibatch_centers(X: np.ndarray, clusters: int, hp: dict[str, Any], seed: int = 0,
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1, web-scale mini-batch k-means (Sculley 2010): ``epochs`` passes over the rows in shuffled batches
    of ``mini_batch_size``; each center moves toward its batch rows with a per-center rate 1 / (rows it has
    taken so far). Returns (centers (clusters, d) float64, rows taken per center): the counts weigh stage 2.

    Written here rather than scikit-learn's MiniBatchKMeans: that one also labels every row at the end
    (``compute_labels``) and needs another full pass for the counts, and runs each small step through its
    OpenMP pool, which on a loaded machine costs far more than the step (measured: 12 s of 15 for 450,000 rows;
    these numpy steps take well under a second)."""
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    rng = np.random.default_rng(seed)
    rows = X.shape[0]
    batch = min(hp["mini_batch_size"], rows)
    if hp["init_method"] == "kmeans++":
        from sklearn.cluster import kmeans_plusplus

        # on a sample of 3 batches (at least 3 x clusters rows), as scikit-learn's MiniBatchKMeans(init_size)
        size = min(rows, max(3 * batch, 3 * clusters))
        sample = X[np.sort(rng.choice(rows, size=size, replace=False))] if size < rows else X
        centers, _ = kmeans_plusplus(sample, clusters, random_state=seed)
    else:
        centers = X[rng.choice(rows, size=clusters, replace=False)]
    # Centers and counts accumulate in float64; the nearest-center search runs in the rows' dtype (float32 as
    # read), as scikit-learn's k-means does: half the memory traffic of float64.
    X = np.asarray(X)
    centers = np.array(centers, dtype=np.float64)
    counts = np.zeros(clusters)
    width = X.shape[1]
    # One BLAS thread: the products are small (batch x d x clusters), and threads only add synchronisation.
    with threadpool_limits(1, user_api="blas"):
        for _ in range(hp["epochs"]):
            order = rng.permutation(rows)
            for start in range(0, rows, batch):
                taken = np.take(X, order[start:start + batch], axis=0)  # 3x faster than X[rows]: same rows
                labels = _nearest(taken, centers)
                hits = np.bincount(labels, minlength=clusters).astype(np.float64)
                # per-center sums of the batch rows in float64, each row added in batch order (the sums a 0/1
                # CSR matrix times the batch gave, bit for bit): rows grouped by center (stable sort), then
                # one add.reduceat down the rows of each group, 2.8x faster than a weighted bincount per cell
                grouped = np.argsort(labels, kind="stable")
                sorted_labels = labels[grouped]
                starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
                sums = np.zeros((clusters, width))
                by_center = np.take(taken, grouped, axis=0).astype(np.float64)
                sums[sorted_labels[starts]] = np.add.reduceat(by_center, starts, axis=0)
                moved = hits > 0
                counts[moved] += hits[moved]
                centers[moved] += (sums[moved] - hits[moved, None] * centers[moved]) / counts[moved, None]
    return centers, counts


def fit_centers(X: np.ndarray, hp: dict[str, Any], seed: int = 0) -> tuple[np.ndarray, float | None]:
    """Stage 1 (mini-batch k-means with extra centers) then stage 2 (weighted local Lloyd's) → ((k, d) centers,
    the training rows' sum of squared distances to them where Lloyd's iterations over the rows computed it, else
    None)."""
    from sklearn.cluster import KMeans

    k, rows = hp["k"], X.shape[0]
    if rows < k:
        raise UserError(f"ClientError: k is {k} but channel 'train' has only {rows} records.")
    factor = hp["extra_center_factor"] or AUTO_CENTER_FACTOR
    extra = max(k, min(k * factor, rows))
    centers, counts = minibatch_centers(X, extra, hp, seed)
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
                        tol=hp["local_lloyd_tol"]).fit(X)
        # inertia_ is of the final centers (scikit-learn relabels after its last update): the train metric
        # without another pass over the rows (summed in the rows' float32: ~1e-5 relative)
        return polish.cluster_centers_.astype(np.float64), float(polish.inertia_)
    return centers, None


def report(host: str, channel: str, X: Any, centers: np.ndarray, metrics: list[str],
           ssd: float | None = None) -> dict[str, float]:
    """Print the channel's ``msd`` / ``ssd`` of ``metrics``; ``ssd`` when already known (the fit's)."""
    from sklearn.metrics import pairwise_distances_argmin_min

    if ssd is None:
        # scikit-learn's fused, chunked search (float32 rows are upcast per chunk): no n x k float64 copies
        _, distances = pairwise_distances_argmin_min(X, centers.astype(X.dtype, copy=False))
        ssd = float(np.square(distances, dtype=np.float64).sum())
    values = {"msd": ssd / X.shape[0], "ssd": ssd}
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
    centers, train_ssd = fit_centers(X, hp)
    report(job.host, "train", X, centers, hp["eval_metrics"], train_ssd)
    if "test" in data:
        report(job.host, "test", data["test"].features, centers, hp["eval_metrics"])
    return firstparty.save_state(job.paths.model, {"centroids": centers},
                                 {"algorithm": ALGORITHM, "feature_dim": hp["feature_dim"], "k": hp["k"]})


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
