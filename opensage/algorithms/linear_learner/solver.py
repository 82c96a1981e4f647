"""Parallel linear models trained by mini-batch SGD / Adam / RMSProp in numpy (no framework needed).

``M`` models share every mini-batch: weights ``W`` are (M, d, K) and biases (M, K), so one pass over the
data trains them all (the design SageMaker's linear learner uses for ``num_models``). Losses give their
gradient with respect to the scores in closed form; L2 (``wd``) is added to the gradient, L1 is applied as a
proximal (soft-threshold) step so that weights can reach exactly zero. Each model keeps the weights of its
best epoch (by the early-stopping loss). With ``Settings.polish`` (smooth losses) no SGD runs: ``polish``
solves each model's objective by full-batch L-BFGS-B from zero, once per distinct (wd, l1); SGD is the
fallback where that fails (a non-finite result) and the trainer of the other losses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------- losses


def sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # one ufunc, stable for large |x| (called once per mini-batch)

    return expit(x)


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
        # From one exp and one log, stable for any z, in the scores' dtype: p = sigmoid(|z|) gives
        # log(1 + e^-|z|) = -log p and sigmoid(z) = 1/2 + sign(z) (p - 1/2) (absolute error ~1e-16, never NaN).
        # np.log is vectorised where log1p is not, and np.where on a mask cost as much as the exp (measured on
        # 4 x 160k: 32 -> 23 ms in float64, 26 -> 6 ms in float32).
        z = s[..., 0]
        p = np.abs(z)
        np.negative(p, out=p)
        np.exp(p, out=p)
        p += 1.0
        np.reciprocal(p, out=p)
        loss = np.log(p)
        np.negative(loss, out=loss)
        loss += np.maximum(z, 0.0)
        loss -= y * z
        p -= 0.5
        np.copysign(p, z, out=p)
        p += 0.5
        p -= y
        return loss, p[..., None]

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
    # Full-batch L-BFGS polish (smooth losses) instead of SGD: polish() solves each model's objective to
    # convergence from zero. Measured on 160k x 50 logistic: 15 SGD epochs stop ~2% short of the optimum.
    # SGD as the polish's starting point (its first epoch, up to 2,000 mini-batches) saved no evaluation:
    # from zero L-BFGS-B needed as many or fewer and reached an equal or lower objective (8 models, features
    # standardised; logistic 50k x 100 15 vs 14, 100k x 30 12 vs 12, 800k x 50 14 vs 14, 160k x 50 14 vs 12-14;
    # softmax 100k x 40 k=10 22 vs 24; squared 200k x 50 10 vs 30; huber 6 vs 4), so the SGD epoch (0.2-0.3 s
    # at 160k x 50, 1 s at 800k x 50) was spent for nothing.
    polish: bool = False
    polish_iterations: int = 200


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
    epoch by the mean loss on ``validation`` (else on the training data).

    Every model's weights and bias live in one matrix ``P`` ((d + 1) x M*K, the bias as the last row), so a
    mini-batch costs two matrix products for all M models and one fused optimizer update:
    with small mini-batches the per-step Python overhead, not the arithmetic, is the cost.

    With ``settings.polish`` the models are ``polish``'s optimum from zero instead (one epoch reported); SGD
    runs only where the polish fails."""
    if settings.polish:
        polished = _fit_by_polish(X, y, weights, loss, outputs, candidates, settings, validation, on_epoch)
        if polished is not None:
            return polished
        settings = replace(settings, polish=False)
    rng = np.random.default_rng(settings.seed)
    n, dim = X.shape
    count = len(candidates)
    models = _init(settings, count, dim, outputs, rng)
    columns = count * outputs
    P = np.empty((dim + 1, columns))
    P[:dim] = models.W.transpose(1, 0, 2).reshape(dim, columns)
    P[dim] = models.b.reshape(columns)
    per_column = np.repeat  # model m's settings apply to its K columns
    rates = per_column(np.array([c.learning_rate for c in candidates]), outputs)
    wd = per_column(np.array([c.wd for c in candidates]), outputs)
    l1 = per_column(np.array([c.l1 for c in candidates]), outputs)
    reg = np.empty_like(P)  # d(wd/2 |W|^2)/dP per entry: wd on weights, bias_wd_mult * wd on the bias
    reg[:dim] = wd
    reg[dim] = settings.bias_wd_mult * wd if settings.use_bias else 0.0
    rate = np.empty_like(P)  # learning rate per entry (bias_lr_mult on the bias row; 0 without a bias)
    rate[:dim] = rates
    rate[dim] = rates * settings.bias_lr_mult if settings.use_bias else 0.0
    has_l1 = bool(l1.any())
    first, second = np.zeros_like(P), np.zeros_like(P)
    grad_buf, step_buf = np.empty_like(P), np.empty_like(P)
    b1, b2, mu = settings.beta_1, settings.beta_2, settings.momentum
    optimizer = settings.optimizer
    size = settings.mini_batch_size
    weights_P, bias_P = P[:dim], P[dim]  # views: the bias row is added to the scores, not multiplied by ones
    best_loss = np.full(count, np.inf)
    best = ParallelModels(models.W.copy(), models.b.copy(), np.zeros(count, dtype=np.int64))
    stale, overall, t = 0, np.inf, 0
    for epoch in range(settings.epochs):
        # Each mini-batch's rows are gathered from X as it is used: no shuffled copy of X per epoch (nor one
        # with a column of ones): on a VM a fresh n x d array costs its first touch, measured 0.16-0.28 s for
        # 64 MB in a job's fresh process, more than gathering every batch (5-10 us each).
        order = rng.permutation(n)
        ye, we = y[order], weights[order]
        total, rows = np.zeros(count), 0
        for begin in range(0, n, size):
            Xb = np.take(X, order[begin:begin + size], axis=0)
            yb, wb = ye[begin:begin + size], we[begin:begin + size]
            scores = (Xb @ weights_P + bias_P).reshape(len(yb), count, outputs).transpose(1, 0, 2)
            values, grad = loss(scores, yb)
            total += values @ wb
            rows += len(yb)
            grad *= (wb / len(yb))[None, :, None]
            flat = grad.transpose(1, 0, 2).reshape(len(yb), columns)
            np.matmul(Xb.T, flat, out=grad_buf[:dim])
            flat.sum(axis=0, out=grad_buf[dim])
            grad_buf += reg * P
            t += 1
            scale = _schedule(settings, t)
            if optimizer == "adam":
                first *= b1
                first += (1 - b1) * grad_buf
                second *= b2
                grad_buf *= grad_buf
                second += (1 - b2) * grad_buf
                np.sqrt(second / (1 - b2 ** t), out=step_buf)
                step_buf += 1e-8
                np.divide(first, step_buf, out=step_buf)
                step_buf *= rate * (scale / (1 - b1 ** t))
            elif optimizer == "rmsprop":
                second *= 0.9
                second += 0.1 * grad_buf * grad_buf
                np.sqrt(second, out=step_buf)
                step_buf += 1e-8
                np.divide(grad_buf, step_buf, out=step_buf)
                step_buf *= rate * scale
            else:
                first *= mu
                first += grad_buf
                np.multiply(first, rate * scale, out=step_buf)
            P -= step_buf
            if has_l1:  # proximal step on the weights: soft-threshold by lr * l1
                weights_part = P[:dim]
                np.copyto(weights_part, np.sign(weights_part) *
                          np.maximum(np.abs(weights_part) - rates * scale * l1, 0.0))
        models = _unpack(P, count, outputs)
        train_loss = total / max(rows, 1)  # the running loss over the mini-batches of this epoch
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


def _fit_by_polish(X: np.ndarray, y: np.ndarray, weights: np.ndarray, loss: Loss, outputs: int,
                   candidates: list[Candidate], settings: Settings, validation: tuple[np.ndarray, np.ndarray] | None,
                   on_epoch: EpochHook | None) -> ParallelModels | None:
    """Every model at its objective's optimum (``polish``), reported as epoch 0 as ``fit`` reports an epoch;
    None where a loss comes out non-finite."""
    polished = polish(X, y, weights, loss, outputs, candidates, settings)
    if polished is None:
        return None
    train_loss = _mean_loss(polished, loss, X, y, weights)
    watched = train_loss if validation is None else _mean_loss(polished, loss, *validation)
    if not (np.all(np.isfinite(train_loss)) and np.all(np.isfinite(watched))):
        return None
    if on_epoch is not None:
        on_epoch(0, train_loss, None if validation is None else watched)
    return polished


def _unpack(P: np.ndarray, count: int, outputs: int) -> ParallelModels:
    dim = P.shape[0] - 1
    return ParallelModels(P[:dim].reshape(dim, count, outputs).transpose(1, 0, 2).copy(),
                          P[dim].reshape(count, outputs).copy())


def _schedule(settings: Settings, step: int) -> float:
    if settings.lr_schedule is None:
        return 1.0
    every, factor, minimum_ratio = settings.lr_schedule
    return max(factor ** (step // every), minimum_ratio)


ROW_BLOCK = 8192  # rows scored at a time over a whole channel: no (n, models) float64 temporary of all rows


def distinct_models(models: ParallelModels) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse): the index of the first model of each group of equal models (weights and bias alike,
    as polished models that share (wd, l1) are), ascending, and each model's position in ``first``."""
    count = models.W.shape[0]
    rows = np.concatenate([models.W.reshape(count, -1), models.b.reshape(count, -1)], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # np.unique orders the groups by value: renumber them by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.ravel()]


def _mean_loss(models: ParallelModels, loss: Loss, X: np.ndarray, y: np.ndarray,
               weights: np.ndarray | None = None) -> np.ndarray:
    """Each model's mean (row-weighted, when ``weights`` are given) loss on (X, y). Equal models (polished to
    one optimum) are evaluated once, and all the others in one product per block of rows."""
    count, dim, outputs = models.W.shape
    first, inverse = distinct_models(models)
    if len(first) < count:
        distinct = ParallelModels(models.W[first], models.b[first])
        return _mean_loss(distinct, loss, X, y, weights)[inverse]
    stacked = models.W.transpose(1, 0, 2).reshape(dim, count * outputs)
    out = np.zeros(count)
    for start in range(0, X.shape[0], ROW_BLOCK):
        chunk = X[start:start + ROW_BLOCK] @ stacked
        scores = chunk.reshape(len(chunk), count, outputs).transpose(1, 0, 2) + models.b[:, None, :]
        values = loss.value(scores, y[start:start + ROW_BLOCK])
        out += values.sum(axis=1) if weights is None else values @ weights[start:start + ROW_BLOCK]
    return out / max(X.shape[0], 1)


def _transposed_float32(X: np.ndarray, rows: int = 2048) -> np.ndarray:
    """``X.T`` as a C-contiguous float32 array, copied a block of rows at a time: a block stays in cache while
    it is scattered into columns (28 ms on 160k x 50 float64, where one strided copy took 77 ms)."""
    out = np.empty((X.shape[1], X.shape[0]), dtype=np.float32)
    for start in range(0, X.shape[0], rows):
        out[:, start:start + rows] = X[start:start + rows].T
    return out


SMOOTH_LOSSES = frozenset({"logistic", "softmax_loss", "squared_loss", "huber_loss", "eps_insensitive_squared_loss"})


def polish(X: np.ndarray, y: np.ndarray, weights: np.ndarray, loss: Loss, outputs: int,
           candidates: list[Candidate], settings: Settings) -> ParallelModels | None:
    """Full-batch L-BFGS-B on each model's own objective (mean weighted loss + wd/2 |W|^2 +
    bias_wd_mult wd/2 b^2 + l1 |W|_1, the objective SGD's steps descend), from zero weights (bias
    ``init_bias``); None where the solution is not finite.

    Models that share (wd, l1) share the optimum (they differ only in learning rate), so one solve per
    distinct pair; all pairs go through one L-BFGS-B
    run on the sum of their (separable) objectives, so each function evaluation is two matrix products for
    all of them. L1 uses the split W = U - V with U, V >= 0: smooth and bound-constrained, and weights that
    L1 removes end exactly on the bound (0), as the proximal SGD step leaves them."""
    from scipy.optimize import minimize

    count, dim = len(candidates), X.shape[1]
    groups: dict[tuple[float, float], list[int]] = {}
    for m, candidate in enumerate(candidates):
        groups.setdefault((candidate.wd, candidate.l1), []).append(m)
    keys = list(groups)
    columns = len(keys) * outputs
    wd = np.repeat([key[0] for key in keys], outputs)
    l1 = np.repeat([key[1] for key in keys], outputs)
    split = bool(l1.any())
    b0 = np.full(columns, settings.init_bias if settings.use_bias else 0.0)
    scaled = weights / max(len(y), 1)  # SGD's objective: the mean over rows of the weighted loss
    bias_wd = settings.bias_wd_mult * wd
    n = len(y)
    size = dim * columns
    # (d, n) float32: W.T @ XT and XT @ G.T measured 2-3x faster than X @ W, X.T @ G in float64 (the passes
    # over X are memory-bound). The scores come out of that product with float32 precision, so the loss is
    # computed in float32 too (4x faster than float64: vectorised exp / log); every sum is taken in float64.
    XT = _transposed_float32(X)
    y32, scaled32 = y.astype(np.float32), scaled.astype(np.float32)

    def unpack(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W = (theta[:size] - theta[size:2 * size]) if split else theta[:size]
        return W.reshape(dim, columns), theta[-columns:]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = unpack(theta)
        scores = W.T.astype(np.float32) @ XT
        scores += b.astype(np.float32)[:, None]
        values, grad = loss(scores.reshape(len(keys), outputs, n).transpose(0, 2, 1), y32)
        grad *= scaled32[None, :, None]
        flat = np.ascontiguousarray(grad.transpose(0, 2, 1)).reshape(columns, n)
        gW = (XT @ flat.T).astype(np.float64) + wd * W
        gb = flat.sum(axis=1, dtype=np.float64) + bias_wd * b
        value = float((values.astype(np.float64) @ scaled).sum() + 0.5 * np.sum(wd * W * W)
                      + 0.5 * np.sum(bias_wd * b * b))
        if not split:
            return value, np.concatenate([gW.ravel(), gb])
        value += float(np.sum(l1 * (theta[:size] + theta[size:2 * size]).reshape(dim, columns)))
        l1_grad = np.broadcast_to(l1, (dim, columns)).ravel()
        return value, np.concatenate([gW.ravel() + l1_grad, -gW.ravel() + l1_grad, gb])

    theta0 = np.concatenate([np.zeros(2 * size if split else size), b0])  # W = 0 (U = V = 0 when split)
    bounds = [(0.0, None)] * (2 * size) if split else [(None, None)] * size
    bounds += [(None, None) if settings.use_bias else (0.0, 0.0)] * columns
    result = minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds,
                      options={"maxiter": settings.polish_iterations, "gtol": 1e-4, "ftol": 1e-9})
    if not np.all(np.isfinite(result.x)):
        return None
    polished = ParallelModels(np.empty((count, dim, outputs)), np.empty((count, outputs)),
                              np.zeros(count, dtype=np.int64))
    W, b = unpack(result.x)
    W = W.reshape(dim, len(keys), outputs).transpose(1, 0, 2)
    b = b.reshape(len(keys), outputs)
    for g, key in enumerate(keys):
        polished.W[groups[key]] = W[g]
        polished.b[groups[key]] = b[g]
    return polished
