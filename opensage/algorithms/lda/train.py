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
# SageMaker's LDA is a spectral (tensor) method whose max_restarts / max_iterations bound its ALS decomposition;
# ours is batch variational Bayes, where a second restart from another seed or passes beyond scikit-learn's 10
# measured no better test per-word log-likelihood on the quality corpus but cost 2-4x the time. So the defaults
# (max_restarts 10, max_iterations 1000) fit one restart of at most 10 passes: the reference's own work.
MAX_RESTARTS = 1  # restarts fitted (of max_restarts): each is a full variational fit
MAX_PASSES = 10  # batch passes over the corpus per restart (of max_iterations), as scikit-learn's default
SCORE_SAMPLE = 1000  # documents scoring a restart / train:pwll (an E-step pass over all of them costs a pass)

log = logging.getLogger("opensage.algorithms")


def fit(X: Any, hp: dict[str, Any], seed: int = 0) -> tuple[Any, LDAModel]:
    """(the best scikit-learn model, its served form) over ``min(max_restarts, MAX_RESTARTS)`` restarts."""
    from sklearn.decomposition import LatentDirichletAllocation

    k = hp["num_topics"]
    best, best_bound = None, -np.inf
    restarts = min(hp["max_restarts"], MAX_RESTARTS)
    sample = _sample(X, seed)
    for restart in range(restarts):
        candidate = LatentDirichletAllocation(
            n_components=k, doc_topic_prior=hp["alpha0"] / k, learning_method="batch",
            max_iter=min(hp["max_iterations"], MAX_PASSES), mean_change_tol=max(hp["tol"], 1e-3),
            batch_size=hp["mini_batch_size"], random_state=seed + restart).fit(X)
        if restarts == 1:  # nothing to choose between: no scoring pass
            best = candidate
            break
        bound = candidate.score(sample)
        log.info("Restart %d: variational bound %s", restart, bound)
        if bound > best_bound:
            best, best_bound = candidate, bound
    return best, LDAModel(best.components_.astype(np.float64), hp["alpha0"] / k)


def _sample(X: Any, seed: int) -> Any:
    """At most SCORE_SAMPLE documents of ``X``, drawn without replacement (all of them when fewer)."""
    if X.shape[0] <= SCORE_SAMPLE:
        return X
    rows = np.sort(np.random.default_rng(seed).choice(X.shape[0], SCORE_SAMPLE, replace=False))
    return X[rows]


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
    # train:pwll estimated on a sample of documents (exact up to 1000 documents): a full pass costs a pass
    quality_metric(job.host, "train", "pwll", pwll(sk_model, _sample(X, 0)))
    if "test" in data:
        quality_metric(job.host, "test", "pwll", pwll(sk_model, _counts(data["test"], "test")))
    arrays, meta = model.state()
    return firstparty.save_state(job.paths.model, arrays, meta)


def main(argv: Sequence[str] | None = None) -> int:
    return firstparty.run(train, ALGORITHM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
