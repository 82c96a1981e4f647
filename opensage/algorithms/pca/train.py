"""PCA training: ``python -m opensage.algorithms.pca.train`` in a SageMaker ``/opt/ml``.

Channels: ``train`` (required) and ``test`` (read and checked; PCA reports no metric); recordio-protobuf
(the default) or ``text/csv`` (every column a feature unless ``label_size=1``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms import firstparty
from opensage.algorithms.firstparty import JobInput, UserError, hyperparameter_error
from opensage.algorithms.formats import dense_training_channel, read_training_channel
from opensage.algorithms.hosts import trains_here
from opensage.algorithms.pca import hyperparameters

ALGORITHM = "pca"
CHANNELS = ("train", "test")
GRAM_RATIO = 4  # rows/features above which regular mode decomposes X^T X instead of X
GRAM_CHUNK_VALUES = 1 << 24  # values per chunk of rows in the partial products of X^T X (64 MiB of float32)
STREAM_CHUNK_VALUES = 1 << 22  # the same for rows as read (16 MiB): the products start while the rest downloads

log = logging.getLogger("opensage.algorithms")


class GramAccumulator:
    """(d, d) float64 (X - mean)^T (X - mean) over chunks of rows as they come, without a centred or float64
    copy of X and without holding X. Each chunk is shifted (by ``shift`` when the caller knows the data's
    column mean, else by the chunk's own mean) and multiplied in the rows' dtype (float32 as read; numpy's
    syrk for ``c.T @ c``); products and sums add up in float64 about one reference point (the first shift),
    every chunk's own shift moved there exactly in float64, and ``result`` moves the sum to the final ``mean``
    the same way. The float32 products so see only centred values: no cancellation against a large mean, even
    when the rows' mean drifts along the file (scikit-learn's covariance_eigh forms one float32 X^T X over all
    rows, then subtracts n mean mean^T)."""

    def __init__(self, d: int, shift: np.ndarray | None = None) -> None:
        self.gram, self.sums, self.rows = np.zeros((d, d)), np.zeros(d), 0
        self.shift = shift  # fixed shift for every chunk (None: each chunk's own mean)
        self.reference: np.ndarray | None = None if shift is None else shift.astype(np.float64)

    def add(self, chunk: np.ndarray, *, scratch: bool = False) -> None:
        """Add rows; ``scratch=True`` lets the chunk be shifted in place (the caller's buffer, reused)."""
        own = self.shift if self.shift is not None else chunk.mean(axis=0, dtype=np.float64).astype(chunk.dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite value: column_mean() tells the caller
            shifted = np.subtract(chunk, own, out=chunk) if scratch else chunk - own
            sums = shifted.sum(axis=0, dtype=np.float64)
            self.gram += shifted.T @ shifted
        if self.reference is None:
            self.reference = own.astype(np.float64)
        elif self.shift is None:
            # sum (x - r)(x - r)^T = sum (x - own + v)(x - own + v)^T with v = own - r, sum (x - own) = sums
            v = own.astype(np.float64) - self.reference
            half = sums + 0.5 * len(chunk) * v
            self.gram += np.outer(half, v) + np.outer(v, half)
            sums = sums + len(chunk) * v
        self.sums += sums
        self.rows += len(chunk)

    def column_mean(self) -> np.ndarray:
        """float64 column means: finite exactly when every value added was (NaN and inf propagate)."""
        assert self.reference is not None and self.rows
        return self.reference + self.sums / self.rows

    def result(self, mean: np.ndarray) -> np.ndarray:
        # the same move, from the reference point to ``mean``: u = reference - mean
        assert self.reference is not None
        u = self.reference - mean
        return self.gram + np.outer(self.sums, u) + np.outer(u, self.sums) + self.rows * np.outer(u, u)


def _centred_gram(X: np.ndarray, mean: np.ndarray, column_mean: np.ndarray | None = None) -> np.ndarray:
    """``GramAccumulator`` over big chunks of an in-memory X (each one is a pass to shift it and a BLAS call),
    shifted by the data's own column mean."""
    d = X.shape[1]
    if column_mean is None:
        column_mean = X.mean(axis=0, dtype=np.float64)
    gram = GramAccumulator(d, column_mean.astype(X.dtype))
    rows = max(1024, GRAM_CHUNK_VALUES // d)
    for start in range(0, X.shape[0], rows):
        gram.add(X[start:start + rows])
    return gram.result(mean)


def _eigen_components(gram: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(v (d, k), s (k,), total) of regular mode from the centred Gram matrix, columns in descending order."""
    eigenvalues, vectors = np.linalg.eigh(gram)  # ascending already
    s = np.sqrt(np.maximum(eigenvalues[-k:][::-1], 0.0))
    return vectors[:, -k:][:, ::-1], s, float(np.trace(gram))


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
        v, s, total = _eigen_components(_centred_gram(X, mean, column_mean), k)
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
    return _finish(mean, v, s, total)


def _finish(mean: np.ndarray, v: np.ndarray, s: np.ndarray, total: float,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    v = v * np.where(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])] < 0, -1.0, 1.0)  # deterministic sign
    return mean, v[:, ::-1].copy(), s[::-1].copy(), total


def decompose_blocks(blocks: Iterable[np.ndarray], d: int, hp: dict[str, Any],
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Regular mode in one pass over the rows as they are read (``content.DenseChannel.blocks``, buffers the
    accumulator may shift in place): decompose's (mean, v, s, total) and the row count, without X in memory.
    UserError when a value is not finite."""
    gram = GramAccumulator(d)
    for chunk in blocks:
        gram.add(chunk, scratch=True)
    column_mean = gram.column_mean()
    if not np.all(np.isfinite(column_mean)):
        raise UserError("ClientError: channel 'train' has feature values that are not finite numbers.")
    mean = column_mean if hp["subtract_mean"] else np.zeros(d)
    v, s, total = _eigen_components(gram.result(mean), hp["num_components"])
    return (*_finish(mean, v, s, total), gram.rows)


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    if not trains_here(job.paths.resourceconfig, job.paths.model):  # algo-1 reads every shard
        return job.paths.model
    job.check_channels(CHANNELS)
    dim = hp["feature_dim"]
    if hp["num_components"] > dim:
        raise hyperparameter_error(f"num_components ({hp['num_components']}) must not exceed feature_dim ({dim})")
    # Regular mode on tall dense recordIO (as record_set() uploads) is one pass over the rows: read a block
    # at a time, never held whole, and worked on while a streamed channel still downloads.
    streamed = None
    if hp["algorithm_mode"] == "regular" and "train" in job.data_config:
        dense = dense_training_channel("train", job.paths.data, job.data_config["train"], supervised=False)
        if dense is not None and dense.rows > GRAM_RATIO * dense.width:
            streamed = dense
    train_data = None
    for name in CHANNELS:
        if name not in job.data_config or (name == "train" and streamed is not None):
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
    if streamed is not None:
        if streamed.width != dim:
            raise UserError(f"ClientError: feature_dim is {dim} but the records of channel 'train' have "
                            f"{streamed.width} features.")
        if hp["num_components"] > streamed.rows:
            raise hyperparameter_error(f"num_components ({hp['num_components']}) must not exceed the number of "
                                       f"records in channel 'train' ({streamed.rows})")
        rows = max(1024, STREAM_CHUNK_VALUES // dim)
        mean, v, s, total, _ = decompose_blocks((features for features, _ in streamed.blocks(rows)), dim, hp)
        return _save(job, hp, mean, v, s, total)
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
    return _save(job, hp, mean, v, s, total)


def _save(job: JobInput, hp: dict[str, Any], mean: np.ndarray, v: np.ndarray, s: np.ndarray, total: float,
          ) -> Path:
    log.info("PCA (%s): %d components explain %.4f of the variance", hp["algorithm_mode"], len(s),
             float(np.sum(s ** 2) / total) if total else 1.0)
    return firstparty.save_state(job.paths.model, {"mean": mean, "v": v, "s": s},
                                 {"algorithm": ALGORITHM, "feature_dim": hp["feature_dim"],
                                  "num_components": hp["num_components"], "subtract_mean": hp["subtract_mean"]})


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
