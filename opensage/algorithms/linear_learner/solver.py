"""Parallel linear models trained by mini-batch SGD / Adam / RMSProp in numpy (no framework needed).

``M`` models share every mini-batch: weights ``W`` are (M, d, K) and biases (M, K), so one pass over the
data trains them all (the design SageMaker's linear learner uses for ``num_models``). Losses give their
gradient with respect to the scores in closed form; L2 (``wd``) is added to the gradient, L1 is applied as a
proximal (soft-threshold) step so that weights can reach exactly zero. Each model keeps the weights of its
best epoch (by the early-stopping loss).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------- losses


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for large |x|


def softmax(s: np.ndarray) -> np.ndarray:
    shifted = np.exp(s - s.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Loss:
    """A loss on scores ``s`` (..., B, K) against labels ``y`` (B,): per-sample values and d/ds."""

    name: str
    margin: float = 1.0
    insensitivity: float = 0.01
    quantile: float = 0.5
    delta: float = 1.0

    def __call__(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return getattr(self, "_" + self.name)(s, y)

    def value(self, s: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self(s, y)[0]

    def _logistic(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z = s[..., 0]
        loss = np.logaddexp(0.0, z) - y * z
        return loss, (sigmoid(z) - y)[..., None]

    def _hinge_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sign = 2.0 * y - 1.0
        gap = self.margin - sign * s[..., 0]
        return np.maximum(gap, 0.0), (np.where(gap > 0, -sign, 0.0))[..., None]

    def _softmax_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, index = np.arange(len(y)), y.astype(np.int64)
        shifted = s - s.max(axis=-1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=-1))
        grad = softmax(s)
        grad[..., rows, index] -= 1.0
        return log_norm - shifted[..., rows, index], grad

    def _squared_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = s[..., 0] - y
        return r * r, (2.0 * r)[..., None]

    def _absolute_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = s[..., 0] - y
        return np.abs(r), np.sign(r)[..., None]

    def _eps_insensitive_squared_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = s[..., 0] - y
        excess = np.maximum(np.abs(r) - self.insensitivity, 0.0)
        return excess * excess, (2.0 * excess * np.sign(r))[..., None]

    def _eps_insensitive_absolute_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = s[..., 0] - y
        excess = np.abs(r) - self.insensitivity
        return np.maximum(excess, 0.0), np.where(excess > 0, np.sign(r), 0.0)[..., None]

    def _quantile_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = y - s[..., 0]
        q = self.quantile
        return np.maximum(q * r, (q - 1.0) * r), np.where(r > 0, -q, 1.0 - q)[..., None]

    def _huber_loss(self, s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = s[..., 0] - y
        small = np.abs(r) <= self.delta
        loss = np.where(small, 0.5 * r * r, self.delta * (np.abs(r) - 0.5 * self.delta))
        return loss, np.where(small, r, self.delta * np.sign(r))[..., None]


# ---------------------------------------------------------------------------------------------- models


@dataclass
class Candidate:
    """One parallel model's optimisation settings."""

    learning_rate: float
    wd: float
    l1: float


@dataclass
class Settings:
    """Optimisation settings shared by every parallel model."""

    optimizer: str = "adam"
    epochs: int = 15
    mini_batch_size: int = 1000
    beta_1: float = 0.9
    beta_2: float = 0.999
    momentum: float = 0.0
    use_bias: bool = True
    bias_lr_mult: float = 1.0
    bias_wd_mult: float = 0.0
    init_method: str = "uniform"
    init_scale: float = 0.07
    init_sigma: float = 0.01
    init_bias: float = 0.0
    lr_schedule: tuple[int, float, float] | None = None  # (step, factor, minimum lr)
    patience: int = 3
    tolerance: float = 0.001
    seed: int = 0


@dataclass
class ParallelModels:
    """Weights of M linear models: ``W`` (M, d, K), ``b`` (M, K)."""

    W: np.ndarray
    b: np.ndarray
    best_epoch: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def scores(self, X: Any) -> np.ndarray:
        """(M, B, K) scores of every model for rows ``X`` (dense or CSR)."""
        return np.stack([np.asarray(X @ self.W[m]) + self.b[m] for m in range(self.W.shape[0])])

    def select(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.W[index].copy(), self.b[index].copy()


def _batches(n: int, size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    order = rng.permutation(n)
    for start in range(0, n, size):
        yield order[start:start + size]


class _Optimizer:
    """Adam / RMSProp / SGD(+momentum) over (W, b) with a per-model learning rate."""

    def __init__(self, settings: Settings, rates: np.ndarray, W: np.ndarray, b: np.ndarray) -> None:
        self.s = settings
        self.rates = rates
        self.state = [np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)]
        self.t = 0

    def step(self, W: np.ndarray, b: np.ndarray, gW: np.ndarray, gb: np.ndarray, scale: float) -> np.ndarray:
        """Update in place; returns the per-model step size actually used (for the L1 proximal step)."""
        self.t += 1
        lr = self.rates * scale
        lr_w = lr[:, None, None]
        lr_b = (lr * self.s.bias_lr_mult)[:, None]
        mW, vW, mb, vb = self.state
        if self.s.optimizer == "adam":
            b1, b2 = self.s.beta_1, self.s.beta_2
            for m, v, g in ((mW, vW, gW), (mb, vb, gb)):
                m *= b1
                m += (1 - b1) * g
                v *= b2
                v += (1 - b2) * g * g
            c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
            W -= lr_w * (mW / c1) / (np.sqrt(vW / c2) + 1e-8)
            b -= lr_b * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
        elif self.s.optimizer == "rmsprop":
            for v, g in ((vW, gW), (vb, gb)):
                v *= 0.9
                v += 0.1 * g * g
            W -= lr_w * gW / (np.sqrt(vW) + 1e-8)
            b -= lr_b * gb / (np.sqrt(vb) + 1e-8)
        else:
            mu = self.s.momentum
            mW *= mu
            mW += gW
            mb *= mu
            mb += gb
            W -= lr_w * mW
            b -= lr_b * mb
        return lr


def _init(settings: Settings, models: int, dim: int, outputs: int, rng: np.random.Generator) -> ParallelModels:
    if settings.init_method == "normal":
        W = rng.normal(0.0, settings.init_sigma, (models, dim, outputs))
    else:
        W = rng.uniform(-settings.init_scale, settings.init_scale, (models, dim, outputs))
    b = np.full((models, outputs), settings.init_bias if settings.use_bias else 0.0)
    return ParallelModels(W, b)


EpochHook = Callable[[int, np.ndarray, np.ndarray | None], None]


def fit(X: np.ndarray, y: np.ndarray, weights: np.ndarray, loss: Loss, outputs: int, candidates: list[Candidate],
        settings: Settings, validation: tuple[np.ndarray, np.ndarray] | None = None,
        on_epoch: EpochHook | None = None) -> ParallelModels:
    """Train ``len(candidates)`` models on standardised ``X`` (n, d); early-stop and keep each model's best
    epoch by the mean loss on ``validation`` (else on the training data)."""
    rng = np.random.default_rng(settings.seed)
    n, dim = X.shape
    count = len(candidates)
    models = _init(settings, count, dim, outputs, rng)
    rates = np.array([c.learning_rate for c in candidates])
    wd = np.array([c.wd for c in candidates])[:, None, None]
    l1 = np.array([c.l1 for c in candidates])[:, None, None]
    optimizer = _Optimizer(settings, rates, models.W, models.b)
    best_loss = np.full(count, np.inf)
    best = ParallelModels(models.W.copy(), models.b.copy(), np.zeros(count, dtype=np.int64))
    stale, overall = 0, np.inf
    for epoch in range(settings.epochs):
        total, seen = np.zeros(count), 0
        for index in _batches(n, settings.mini_batch_size, rng):
            Xb, yb, wb = X[index], y[index], weights[index]
            scores = np.einsum("bd,mdk->mbk", Xb, models.W) + models.b[:, None, :]
            values, grad = loss(scores, yb)
            total += (values * wb).sum(axis=1)
            seen += len(index)
            grad *= (wb / len(index))[None, :, None]
            gW = np.einsum("bd,mbk->mdk", Xb, grad) + wd * models.W
            gb = grad.sum(axis=1) + settings.bias_wd_mult * wd[:, :, 0] * models.b if settings.use_bias else \
                np.zeros_like(models.b)
            lr = optimizer.step(models.W, models.b, gW, gb, _schedule(settings, optimizer.t))
            if l1.any():  # proximal step: soft-threshold by lr * l1
                shrink = lr[:, None, None] * l1
                np.copyto(models.W, np.sign(models.W) * np.maximum(np.abs(models.W) - shrink, 0.0))
        train_loss = total / max(seen, 1)
        watched = train_loss if validation is None else _mean_loss(models, loss, *validation)
        watched = np.where(np.isfinite(watched), watched, np.inf)
        if on_epoch is not None:
            on_epoch(epoch, train_loss, None if validation is None else watched)
        improved = watched < best_loss
        best.W[improved], best.b[improved] = models.W[improved], models.b[improved]
        best.best_epoch[improved] = epoch
        best_loss = np.minimum(best_loss, watched)
        current = float(best_loss.min())
        if np.isfinite(overall) and overall - current <= settings.tolerance * abs(overall):
            stale += 1
            if stale >= settings.patience:
                break
        else:
            stale = 0
        overall = min(overall, current)
    return best


def _schedule(settings: Settings, step: int) -> float:
    if settings.lr_schedule is None:
        return 1.0
    every, factor, minimum_ratio = settings.lr_schedule
    return max(factor ** (step // every), minimum_ratio)


def _mean_loss(models: ParallelModels, loss: Loss, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.zeros(models.W.shape[0])
    for start in range(0, X.shape[0], 8192):
        scores = np.einsum("bd,mdk->mbk", X[start:start + 8192], models.W) + models.b[:, None, :]
        out += loss.value(scores, y[start:start + 8192]).sum(axis=1)
    return out / max(X.shape[0], 1)


SMOOTH_LOSSES = frozenset({"logistic", "softmax_loss", "squared_loss", "huber_loss", "eps_insensitive_squared_loss"})


def refine(models: ParallelModels, X: np.ndarray, y: np.ndarray, weights: np.ndarray, loss: Loss,
           candidates: list[Candidate], settings: Settings, max_iterations: int) -> ParallelModels:
    """Polish each model with full-batch L-BFGS on the same objective (mean weighted loss + wd/2 |W|^2;
    smooth losses, no L1), starting from its SGD solution: the result no longer depends on the epoch budget
    and matches what scikit-learn's solvers reach on the same objective."""
    from scipy.optimize import minimize

    _, dim, outputs = models.W.shape
    total_weight = float(weights.sum()) or 1.0
    refined = ParallelModels(models.W.copy(), models.b.copy(), models.best_epoch.copy())
    for m, candidate in enumerate(candidates):
        if candidate.l1 > 0:
            continue
        wd = candidate.wd

        def objective(theta: np.ndarray, wd: float = wd) -> tuple[float, np.ndarray]:
            W = theta[:dim * outputs].reshape(dim, outputs)
            b = theta[dim * outputs:] if settings.use_bias else np.zeros(outputs)
            values, grad = loss((X @ W + b)[None], y)
            grad = grad[0] * (weights / total_weight)[:, None]
            value = float(values[0] @ weights) / total_weight + 0.5 * wd * float(np.sum(W * W))
            gW = X.T @ grad + wd * W
            parts = [gW.ravel()] + ([grad.sum(axis=0) + settings.bias_wd_mult * wd * b] if settings.use_bias else [])
            return value, np.concatenate(parts)

        start = np.concatenate([models.W[m].ravel()] + ([models.b[m]] if settings.use_bias else []))
        result = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iterations})
        if np.all(np.isfinite(result.x)):
            refined.W[m] = result.x[:dim * outputs].reshape(dim, outputs)
            if settings.use_bias:
                refined.b[m] = result.x[dim * outputs:]
    return refined
