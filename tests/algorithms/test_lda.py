"""Built-in LDA: train (process) -> test:pwll -> served topic_mixture; quality vs scikit-learn's
LatentDirichletAllocation on a synthetic corpus with known topics (topic recovery, per-word likelihood)."""

import json
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest

from tests.algorithms.firstparty_support import (
    handler,
    invoke,
    ml_root,
    quality_metrics,
    recordio_bytes,
    run_training,
    sdk_records,
    train_in_process,
)

K, V = 5, 100


def _corpus(docs=1000, length=100, seed=0):
    """Five topics on disjoint 20-word blocks; documents mix them with Dirichlet(0.2) proportions."""
    rng = np.random.default_rng(seed)
    topics = np.zeros((K, V))
    for k in range(K):
        topics[k, k * 20:(k + 1) * 20] = rng.dirichlet(np.ones(20))
    theta = rng.dirichlet(np.full(K, 0.2), docs)
    X = np.array([rng.multinomial(length, t @ topics) for t in theta]).astype(np.float32)
    return X, topics, theta


def _match(true, learned):
    """Mean cosine similarity of true topics to learned ones under the best one-to-one matching, and the
    matching (learned index per true topic)."""
    from scipy.optimize import linear_sum_assignment

    sim = (true @ learned.T) / np.outer(np.linalg.norm(true, axis=1), np.linalg.norm(learned, axis=1))
    rows, cols = linear_sum_assignment(-sim)
    return float(sim[rows, cols].mean()), cols


def test_train_process_pwll_and_topics_match_sklearn_then_serve_mixtures(tmp_path):
    from sklearn.decomposition import LatentDirichletAllocation

    X, topics, theta = _corpus()
    root = ml_root(tmp_path, {"num_topics": K, "feature_dim": V, "mini_batch_size": 100},
                   {"train": (X[:800], None), "test": (X[800:], None)})
    result = run_training("lda", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    reference = LatentDirichletAllocation(K, doc_topic_prior=1.0 / K, random_state=0).fit(X[:800])
    reference_pwll = reference.score(X[800:]) / X[800:].sum()
    assert quality_metrics(result.stdout)["test:pwll"] >= reference_pwll - 0.01 * abs(reference_pwll)

    from opensage.algorithms.lda.serve import load

    model = load(root / "model")
    ours, order = _match(topics, model.topic_word)
    assert ours >= _match(topics, reference.components_)[0] - 0.01 and ours > 0.95
    h = handler("lda", root / "model")
    records = sdk_records(invoke(h, recordio_bytes(X[800:]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf").body)
    mixtures = np.array([list(r.label["topic_mixture"].float32_tensor.values) for r in records])
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, rtol=1e-5)
    served_error = np.abs(mixtures[:, order] - theta[800:]).mean()
    _, ref_order = _match(topics, reference.components_)
    reference_error = np.abs(reference.transform(X[800:])[:, ref_order] - theta[800:]).mean()
    assert served_error <= reference_error + 0.01
    as_json = json.loads(invoke(h, b"\n".join(b",".join(b"%d" % v for v in row) for row in X[800:802]), "text/csv",
                                "application/json").body)
    np.testing.assert_allclose([p["topic_mixture"] for p in as_json["predictions"]], mixtures[:2], atol=1e-6)


def test_train_negative_counts_or_too_few_documents_fail(tmp_path):
    X, _, _ = _corpus(docs=20)
    root = ml_root(tmp_path, {"num_topics": K, "feature_dim": V, "mini_batch_size": 10}, {"train": (-X, None)})
    assert run_training("lda", root).returncode == 1
    assert "non-negative word counts" in (root / "output" / "failure").read_text()
    root = ml_root(tmp_path / "b", {"num_topics": 30, "feature_dim": V, "mini_batch_size": 10}, {"train": (X, None)})
    with pytest.raises(Exception, match="num_topics is 30"):
        train_in_process("lda", root)


def test_serve_negative_counts_answer_400(tmp_path):
    X, _, _ = _corpus(docs=50)
    root = ml_root(tmp_path, {"num_topics": K, "feature_dim": V, "mini_batch_size": 10, "max_restarts": 1},
                   {"train": (X, None)})
    train_in_process("lda", root)
    response = invoke(handler("lda", root / "model"), recordio_bytes(-X[:2]), "application/x-recordio-protobuf",
                      "application/json")
    assert response.status == 400 and b"word counts" in response.body
