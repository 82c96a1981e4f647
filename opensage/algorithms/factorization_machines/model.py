"""The factorization machine's prediction in numpy (serving and metrics; training uses the same formula in
torch) and the metrics SageMaker reports for it."""

from __future__ import annotations

from typing import Any

import numpy as np

ALGORITHM = "factorization-machines"


class FMModel:
    def __init__(self, bias: float, linear: np.ndarray, factors: np.ndarray, predictor_type: str) -> None:
        self.bias, self.linear, self.factors, self.predictor_type = float(bias), linear, factors, predictor_type

    @property
    def feature_dim(self) -> int:
        return int(self.linear.shape[0])

    def raw(self, X: Any) -> np.ndarray:
        """w0 + <w, x> + 0.5 * sum_f ((x V)_f^2 - (x^2 V^2)_f) per row (dense or CSR)."""
        squared = X.multiply(X) if hasattr(X, "multiply") else np.square(X)
        xv = np.asarray(X @ self.factors, dtype=np.float64)
        x2v2 = np.asarray(squared @ np.square(self.factors), dtype=np.float64)
        linear = np.asarray(X @ self.linear, dtype=np.float64).ravel()
        return self.bias + linear + 0.5 * (np.square(xv) - x2v2).sum(axis=1)

    def outputs(self, X: Any) -> dict[str, np.ndarray]:
        raw = self.raw(X)
        if self.predictor_type == "regressor":
            return {"score": raw}
        score = 1.0 / (1.0 + np.exp(-np.clip(raw, -500, 500)))
        return {"score": score, "predicted_label": (score > 0.5).astype(np.float64)}

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return ({"bias": np.array([self.bias]), "linear": self.linear, "factors": self.factors},
                {"algorithm": ALGORITHM, "feature_dim": self.feature_dim, "predictor_type": self.predictor_type,
                 "num_factors": int(self.factors.shape[1])})

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> FMModel:
        return cls(float(arrays["bias"][0]), arrays["linear"], arrays["factors"], meta["predictor_type"])


def metrics(model: FMModel, X: Any, y: np.ndarray) -> list[tuple[str, float, str]]:
    """(name, value, kind) as SageMaker's FM reports them: rmse for a regressor; accuracy, cross entropy and
    F1 (``binary_f_beta``) for a binary classifier."""
    out = model.outputs(X)
    if model.predictor_type == "regressor":
        return [("rmse", float(np.sqrt(np.mean((out["score"] - y) ** 2))), "loss")]
    p = np.clip(out["score"], 1e-12, 1 - 1e-12)
    predicted = out["predicted_label"]
    tp = float(np.sum((predicted == 1) & (y == 1)))
    precision = tp / max(float(np.sum(predicted == 1)), 1.0)
    recall = tp / max(float(np.sum(y == 1)), 1.0)
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return [("binary_classification_accuracy", float(np.mean(predicted == y)), "score"),
            ("binary_classification_cross_entropy", float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
             "loss"),
            ("binary_f_beta", f1, "score")]
