"""The LDA model served: topic-word pseudo-counts and the document-topic prior; ``topic_mixture`` by the
variational E-step scikit-learn's ``LatentDirichletAllocation.transform`` runs (gamma from ones, at most 100
updates, per-document mean change < 1e-3), in numpy + scipy."""

from __future__ import annotations

from typing import Any

import numpy as np

ALGORITHM = "lda"
MAX_DOC_ITERATIONS = 100
DOC_TOLERANCE = 1e-3


def _expectation(values: np.ndarray) -> np.ndarray:
    """exp(E[log x]) of Dirichlet rows."""
    from scipy.special import psi

    return np.exp(psi(values) - psi(values.sum(axis=1, keepdims=True)))


class LDAModel:
    def __init__(self, topic_word: np.ndarray, alpha: float) -> None:
        self.topic_word, self.alpha = topic_word, float(alpha)
        self.exp_topic_word = _expectation(topic_word)

    @property
    def feature_dim(self) -> int:
        return int(self.topic_word.shape[1])

    def topic_mixture(self, counts: Any) -> np.ndarray:
        X = np.asarray(counts.toarray() if hasattr(counts, "toarray") else counts, dtype=np.float64)
        W = self.exp_topic_word
        gamma = np.ones((X.shape[0], W.shape[0]))
        active = np.ones(X.shape[0], dtype=bool)
        for _ in range(MAX_DOC_ITERATIONS):
            if not active.any():
                break
            g = gamma[active]
            theta = _expectation(g)
            ratio = X[active] / (theta @ W + np.finfo(np.float64).eps)
            updated = self.alpha + theta * (ratio @ W.T)
            done = np.abs(updated - g).mean(axis=1) < DOC_TOLERANCE
            gamma[active] = updated
            active[np.flatnonzero(active)[done]] = False
        return gamma / gamma.sum(axis=1, keepdims=True)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"topic_word": self.topic_word}, {"algorithm": ALGORITHM, "feature_dim": self.feature_dim,
                                                 "num_topics": int(self.topic_word.shape[0]), "alpha": self.alpha}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> LDAModel:
        return cls(arrays["topic_word"], float(meta["alpha"]))
