"""LDA training: ``python -m opensage.algorithms.lda.train``.

Channels: ``train`` (required) and ``test``: word counts per document, recordio-protobuf (dense or sparse) or
``text/csv`` (every column a count). Counts must be non-negative. ``test:pwll`` is the test documents'
log-likelihood bound divided by their word count.
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
from opensage.algorithms.lda import hyperparameters
from opensage.algorithms.lda.model import ALGORITHM, LDAModel

CHANNELS = ("train", "test")
MAX_RESTARTS = 2  # restarts fitted (of max_restarts): each is a full variational fit
MAX_PASSES = 20  # batch passes over the corpus per restart (of max_iterations); scikit-learn uses 10

log = logging.getLogger("opensage.algorithms")


def fit(X: Any, hp: dict[str, Any], seed: int = 0) -> tuple[Any, LDAModel]:
    """(the best scikit-learn model, its served form) over ``min(max_restarts, MAX_RESTARTS)`` restarts."""
    from sklearn.decomposition import LatentDirichletAllocation

    k = hp["num_topics"]
    best, best_bound = None, -np.inf
    for restart in range(min(hp["max_restarts"], MAX_RESTARTS)):
        candidate = LatentDirichletAllocation(
            n_components=k, doc_topic_prior=hp["alpha0"] / k, learning_method="batch",
            max_iter=min(hp["max_iterations"], MAX_PASSES), mean_change_tol=max(hp["tol"], 1e-3),
            batch_size=hp["mini_batch_size"], random_state=seed + restart).fit(X)
        bound = candidate.score(X)
        log.info("Restart %d: variational bound %s", restart, bound)
        if bound > best_bound:
            best, best_bound = candidate, bound
    return best, LDAModel(best.components_.astype(np.float64), hp["alpha0"] / k)


def pwll(sk_model: Any, X: Any) -> float:
    words = float(X.sum())
    return float(sk_model.score(X)) / max(words, 1.0)


def _counts(found: Any, channel: str) -> Any:
    values = found.features.data if found.is_sparse else found.features
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise UserError(f"ClientError: channel '{channel}' must hold non-negative word counts.")
    return found.features


def train(job: JobInput) -> Path:
    hp = hyperparameters.parse(job.raw_hyperparameters)
    data = job.read_channels(CHANNELS, hp["feature_dim"], supervised=False)
    X = _counts(data["train"], "train")
    if X.shape[0] < hp["num_topics"]:
        raise UserError(f"ClientError: num_topics is {hp['num_topics']} but channel 'train' has only "
                        f"{X.shape[0]} documents.")
    log.info("Fitting %d topics to %d documents (%d words)", hp["num_topics"], X.shape[0], hp["feature_dim"])
    sk_model, model = fit(X, hp)
    quality_metric(job.host, "train", "pwll", pwll(sk_model, X))
    if "test" in data:
        quality_metric(job.host, "test", "pwll", pwll(sk_model, _counts(data["test"], "test")))
    arrays, meta = model.state()
    return firstparty.save_state(job.paths.model, arrays, meta)


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
