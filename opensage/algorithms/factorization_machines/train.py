"""Factorization machines training: ``python -m opensage.algorithms.factorization_machines.train``.

Channels: ``train`` (required) and ``test``, labelled recordio-protobuf only (dense or sparse Float32 records,
as ``write_spmatrix_to_sparse_tensor`` writes them for AWS's MovieLens notebook). Binary labels are 0 / 1.
Metrics: ``train``/``test`` ``rmse`` (regressor) or ``binary_classification_accuracy``,
``binary_classification_cross_entropy``, ``binary_f_beta`` (binary classifier); per-epoch lines carry
``epoch=``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from opensage.algorithms import firstparty
from opensage.algorithms.factorization_machines import hyperparameters
from opensage.algorithms.factorization_machines.model import ALGORITHM, FMModel, metrics
from opensage.algorithms.firstparty import JobInput, UserError, quality_metric
from opensage.algorithms.formats import RECORDIO_TYPE

CHANNELS = ("train", "test")

log = logging.getLogger("opensage.algorithms")


def _init(torch: Any, shape: tuple[int, ...], hp: dict[str, Any], term: str, generator: Any) -> Any:
    method = hp[f"{term}_init_method"]
    if method == "constant":
        return torch.full(shape, float(hp[f"{term}_init_value"]))
    if method == "uniform":
        scale = float(hp[f"{term}_init_scale"])
        return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * scale
    return torch.randn(shape, generator=generator) * float(hp[f"{term}_init_sigma"])


def _batches(torch: Any, X: sp.csr_matrix, size: int) -> list[tuple[Any, Any]]:
    """(x, x squared) sparse COO tensors per mini-batch, built once."""
    out = []
    for start in range(0, X.shape[0], size):
        block = X[start:start + size].tocoo()
        indices = torch.from_numpy(np.vstack([block.row, block.col]).astype(np.int64))
        values = torch.from_numpy(block.data.astype(np.float32))
        out.append((torch.sparse_coo_tensor(indices, values, block.shape, check_invariants=False).coalesce(),
                    torch.sparse_coo_tensor(indices, values * values, block.shape, check_invariants=False).coalesce()))
    return out


def fit(X: Any, y: np.ndarray, hp: dict[str, Any], seed: int = 0, host: str = "algo-1") -> FMModel:
    import torch

    # Mini-batches here are small: torch's intra-op threads cost more than they save (measured ~10x slower
    # with the default thread count on 2 busy cores).
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    X = sp.csr_matrix(X, dtype=np.float32)
    order = np.random.default_rng(seed).permutation(X.shape[0])
    X, y = X[order], y[order]
    dim, k = X.shape[1], hp["num_factors"]
    w0 = torch.nn.Parameter(_init(torch, (1,), hp, "bias", generator))
    w = torch.nn.Parameter(_init(torch, (dim,), hp, "linear", generator))
    v = torch.nn.Parameter(_init(torch, (dim, k), hp, "factors", generator))
    optimizer = torch.optim.Adam([{"params": [w0], "lr": hp["bias_lr"], "weight_decay": hp["bias_wd"]},
                                  {"params": [w], "lr": hp["linear_lr"], "weight_decay": hp["linear_wd"]},
                                  {"params": [v], "lr": hp["factors_lr"], "weight_decay": hp["factors_wd"]}],
                                 eps=hp["eps"])
    batches = _batches(torch, X, hp["mini_batch_size"])
    labels = [torch.from_numpy(y[i:i + hp["mini_batch_size"]].astype(np.float32))
              for i in range(0, len(y), hp["mini_batch_size"])]
    loss_fn = (torch.nn.functional.mse_loss if hp["predictor_type"] == "regressor"
               else torch.nn.functional.binary_cross_entropy_with_logits)
    rng = np.random.default_rng(seed)
    for epoch in range(hp["epochs"]):
        total = 0.0
        for b in rng.permutation(len(batches)):
            x, x2 = batches[b]
            xv = torch.sparse.mm(x, v)
            raw = w0 + torch.sparse.mm(x, w[:, None]).squeeze(1) + 0.5 * (xv * xv - torch.sparse.mm(x2, v * v)).sum(1)
            loss = loss_fn(raw, labels[b])
            optimizer.zero_grad()
            loss.backward()
            for p in (w0, w, v):  # MXNet's optimizer options: rescale, then clip each gradient element
                if hp["rescale_grad"] is not None:
                    p.grad.mul_(hp["rescale_grad"])
                if hp["clip_gradient"] is not None:
                    p.grad.clamp_(-hp["clip_gradient"], hp["clip_gradient"])
            optimizer.step()
            total += float(loss.detach()) * labels[b].shape[0]
        objective = "rmse" if hp["predictor_type"] == "regressor" else "binary_classification_cross_entropy"
        value = float(np.sqrt(total / len(y))) if objective == "rmse" else total / len(y)
        quality_metric(host, "train", objective, value, kind="loss", epoch=epoch)
    return FMModel(float(w0.detach()[0]), w.detach().numpy().astype(np.float64),
                   v.detach().numpy().astype(np.float64), hp["predictor_type"])


def _check_labels(name: str, labels: np.ndarray, predictor_type: str) -> None:
    if not np.all(np.isfinite(labels)):
        raise UserError(f"ClientError: channel '{name}' has labels that are not finite numbers.")
    if predictor_type == "binary_classifier" and not np.all(np.isin(labels, (0.0, 1.0))):
        raise UserError(f"ClientError: channel '{name}': binary_classifier labels must be 0 or 1 (found "
                        f"{sorted(set(np.unique(labels).tolist()) - {0.0, 1.0})[:5]}).")


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    data = job.read_channels(CHANNELS, hp["feature_dim"], supervised=True, supported=(RECORDIO_TYPE,))
    for name, found in data.items():
        _check_labels(name, found.labels, hp["predictor_type"])
    X = sp.csr_matrix(data["train"].features, dtype=np.float32)
    if not np.all(np.isfinite(X.data)):
        raise UserError("ClientError: channel 'train' has feature values that are not finite numbers.")
    log.info("Training a %d-factor machine on %d records (%d features)", hp["num_factors"], X.shape[0], X.shape[1])
    model = fit(X, data["train"].labels, hp, host=job.host)
    for name in CHANNELS:
        if name in data:
            for metric, value, kind in metrics(model, data[name].features, data[name].labels):
                quality_metric(job.host, name, metric, value, kind=kind)
    arrays, meta = model.state()
    return firstparty.save_state(job.paths.model, arrays, meta)


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
