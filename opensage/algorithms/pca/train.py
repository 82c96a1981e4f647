"""PCA training: ``python -m opensage.algorithms.pca.train`` in a SageMaker ``/opt/ml``.

Channels: ``train`` (required) and ``test`` (read and checked; PCA reports no metric); recordio-protobuf
(the default) or ``text/csv`` (every column a feature unless ``label_size=1``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms import firstparty
from opensage.algorithms.firstparty import JobInput, UserError, hyperparameter_error
from opensage.algorithms.formats import read_training_channel
from opensage.algorithms.hosts import trains_here
from opensage.algorithms.pca import hyperparameters

ALGORITHM = "pca"
CHANNELS = ("train", "test")
GRAM_RATIO = 4  # rows/features above which regular mode decomposes X^T X instead of X
GRAM_CHUNK_VALUES = 1 << 24  # values per chunk of rows in the partial products of X^T X (64 MiB of float32)

log = logging.getLogger("opensage.algorithms")


def _centred_gram(X: np.ndarray, mean: np.ndarray, column_mean: np.ndarray | None = None) -> np.ndarray:
    """(d, d) float64 (X - mean)^T (X - mean) accumulated over chunks of rows, without a centred or float64 copy
    of X. Each chunk is shifted by the data's own mean and multiplied in the rows' dtype (float32 as read;
    numpy's syrk for ``c.T @ c``); the chunks' products and sums add up in float64, and the difference between
    that shift and ``mean`` (zero with subtract_mean=false) is put back exactly in float64. The float32
    products so see only centred values: no cancellation against a large mean (scikit-learn's covariance_eigh
    forms one float32 X^T X over all rows, then subtracts n mean mean^T)."""
    d = X.shape[1]
    if column_mean is None:
        column_mean = X.mean(axis=0, dtype=np.float64)
    shift = column_mean.astype(X.dtype)
    gram, sums = np.zeros((d, d)), np.zeros(d)
    rows = max(1024, GRAM_CHUNK_VALUES // d)  # big chunks: each one is a pass to shift it and a BLAS call
    for start in range(0, X.shape[0], rows):
        chunk = X[start:start + rows] - shift
        gram += chunk.T @ chunk
        sums += chunk.sum(axis=0, dtype=np.float64)
    # sum (x - mean)(x - mean)^T = sum (x - shift + u)(x - shift + u)^T with u = shift - mean
    u = shift.astype(np.float64) - mean
    gram += np.outer(sums, u) + np.outer(u, sums) + X.shape[0] * np.outer(u, u)
    return gram


def decompose(X: np.ndarray, hp: dict[str, Any], seed: int = 0, column_mean: np.ndarray | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean (d,), v (d, k), s (k,), total sum of squares of the centred rows) with columns in ascending order
    of singular value. ``X`` float32 or float64; it is not modified. ``column_mean``: ``X.mean(axis=0,
    dtype=np.float64)`` if the caller has it already (one pass over X less)."""
    k = hp["num_components"]
    if column_mean is None and (hp["subtract_mean"] or hp["algorithm_mode"] == "regular"):
        column_mean = X.mean(axis=0, dtype=np.float64)
    mean = column_mean if hp["subtract_mean"] else np.zeros(X.shape[1])
    if hp["algorithm_mode"] == "regular" and X.shape[0] > GRAM_RATIO * X.shape[1]:
        gram = _centred_gram(X, mean, column_mean)
        eigenvalues, vectors = np.linalg.eigh(gram)  # ascending already
        s = np.sqrt(np.maximum(eigenvalues[-k:][::-1], 0.0))
        v = vectors[:, -k:][:, ::-1]
        total = float(np.trace(gram))
    elif hp["algorithm_mode"] == "randomized":
        from sklearn.utils.extmath import randomized_svd

        # in the rows' dtype, as scikit-learn's PCA(svd_solver="randomized") does: a float64 copy and float64
        # products cost more (80,000 x 500: 4.8 CPU s vs 2.8, scikit-learn 2.2-2.7), variance kept equal to 1e-7
        centred = X - mean.astype(X.dtype)
        total = float(np.einsum("ij,ij->", centred, centred, dtype=np.float64))
        extra = hp["extra_components"] if hp["extra_components"] >= 0 else max(10, k)
        _, s, vt = randomized_svd(centred, k, n_oversamples=extra, random_state=seed)
        s, v = s.astype(np.float64), vt.T.astype(np.float64)
    else:
        centred = np.asarray(X, dtype=np.float64) - mean
        total = float(np.einsum("ij,ij->", centred, centred))
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        s, v = s[:k], vt[:k].T
    v = v * np.where(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])] < 0, -1.0, 1.0)  # deterministic sign
    return mean, v[:, ::-1].copy(), s[::-1].copy(), total


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    if not trains_here(job.paths.resourceconfig, job.paths.model):  # algo-1 reads every shard
        return job.paths.model
    job.check_channels(CHANNELS)
    dim = hp["feature_dim"]
    if hp["num_components"] > dim:
        raise hyperparameter_error(f"num_components ({hp['num_components']}) must not exceed feature_dim ({dim})")
    train_data = None
    for name in CHANNELS:
        if name not in job.data_config:
            continue
        data = read_training_channel(name, job.paths.data, job.data_config[name], supervised=False)
        if data is None:
            raise UserError(f"ClientError: channel '{name}' has no data (looked in {job.paths.data / name}).")
        if data.num_columns != dim and not (data.is_sparse and data.num_columns < dim):
            raise UserError(f"ClientError: feature_dim is {dim} but the records of channel '{name}' have "
                            f"{data.num_columns} features.")
        if data.is_sparse and data.num_columns < dim:
            data.features.resize((data.num_rows, dim))
        if name == "train":
            train_data = data
    if train_data is None:
        raise UserError("ClientError: channel 'train' is required.")
    X = train_data.dense()  # float32; decompose upcasts where it needs to
    # float64 column sums of float32 values overflow for no realistic row count: a column mean is finite
    # exactly when all of its values are (NaN and inf propagate), and decompose needs the means anyway
    column_mean = X.mean(axis=0, dtype=np.float64)
    if not np.all(np.isfinite(column_mean)):
        raise UserError("ClientError: channel 'train' has feature values that are not finite numbers.")
    if hp["num_components"] > X.shape[0]:
        raise hyperparameter_error(f"num_components ({hp['num_components']}) must not exceed the number of "
                                   f"records in channel 'train' ({X.shape[0]})")
    mean, v, s, total = decompose(X, hp, column_mean=column_mean)
    log.info("PCA (%s): %d components explain %.4f of the variance", hp["algorithm_mode"], len(s),
             float(np.sum(s ** 2) / total) if total else 1.0)
    return firstparty.save_state(job.paths.model, {"mean": mean, "v": v, "s": s},
                                 {"algorithm": ALGORITHM, "feature_dim": dim,
                                  "num_components": hp["num_components"], "subtract_mean": hp["subtract_mean"]})


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
