"""Built-in Random Cut Forest: train (process) with a labelled CSV test channel -> test:f1 / accuracy ->
served scores; quality vs scikit-learn's IsolationForest on data with injected anomalies."""

import json
import math
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
)


def _with_anomalies(n=4000, dims=5, anomalies=40, seed=0):
    """Two Gaussian clusters plus uniformly scattered anomalies (label 1), shuffled."""
    rng = np.random.default_rng(seed)
    inliers = np.vstack([rng.normal(0, 1, (n // 2, dims)), rng.normal(4, 0.5, (n // 2, dims))])
    X = np.vstack([inliers, rng.uniform(-6, 8, (anomalies, dims))]).astype(np.float32)
    y = np.r_[np.zeros(n), np.ones(anomalies)].astype(np.float32)
    order = rng.permutation(len(y))
    return X[order], y[order]


def _scores(h, X):
    body = invoke(h, recordio_bytes(X), "application/x-recordio-protobuf", "application/json").body
    return np.array([s["score"] for s in json.loads(body)["scores"]])


def test_train_process_csv_test_channel_f1_matches_served_scores(tmp_path):
    X, y = _with_anomalies()
    test_csv = "\n".join(",".join([repr(float(label))] + [repr(float(v)) for v in row])
                         for row, label in zip(X[:1000], y[:1000], strict=True)).encode()
    root = ml_root(tmp_path, {"feature_dim": 5, "num_trees": 50, "num_samples_per_tree": 256},
                   {"train": (X, None), "test": test_csv}, {"test": {"ContentType": "text/csv;label_size=1"}})
    result = run_training("randomcutforest", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = quality_metrics(result.stdout)
    assert set(metrics) == {"test:accuracy", "test:precision", "test:recall", "test:f1"}

    from opensage.algorithms.firstparty import load_state

    cutoff = load_state(root / "model", "randomcutforest")[1]["threshold"]
    h = handler("randomcutforest", root / "model")
    predicted, actual = _scores(h, X[:1000]) > cutoff, y[:1000] == 1
    precision = np.sum(predicted & actual) / max(predicted.sum(), 1)
    recall = np.sum(predicted & actual) / actual.sum()
    assert metrics["test:f1"] == pytest.approx(2 * precision * recall / (precision + recall), rel=1e-6)
    assert metrics["test:f1"] > 0.6 and metrics["test:accuracy"] > 0.98
    records = sdk_records(invoke(h, recordio_bytes(X[:3]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf").body)
    assert [set(r.label) for r in records] == [{"score"}] * 3


def test_serve_scores_rank_anomalies_as_isolation_forest_does(tmp_path):
    """Injected anomalies: ROC AUC of the served scores within 0.01 of IsolationForest's, and the two rankings
    agree (Spearman > 0.8); inliers score about 1, anomalies clearly more (AWS's scale)."""
    from scipy.stats import spearmanr
    from sklearn.ensemble import IsolationForest
    from sklearn.metrics import roc_auc_score

    from tests.algorithms.firstparty_support import train_in_process

    X, y = _with_anomalies(seed=1)
    root = ml_root(tmp_path, {"feature_dim": 5}, {"train": (X, None)})
    train_in_process("randomcutforest", root)
    scores = _scores(handler("randomcutforest", root / "model"), X)
    reference = -IsolationForest(random_state=0).fit(X).score_samples(X)
    assert roc_auc_score(y, scores) >= roc_auc_score(y, reference) - 0.01
    assert spearmanr(scores, reference)[0] > 0.8
    assert 0.5 < np.median(scores[y == 0]) < 1.5 and np.median(scores[y == 1]) > 2 * np.median(scores[y == 0])


def test_score_point_cut_off_at_root_is_log2_sample_size():
    """A row far outside every tree's bounding box is separated by the first cut with probability ~1: its score
    is scoreUnseen(depth 0) * log2(samples + 1) = log2(257); a row equal to a training row scores lowest."""
    from opensage.algorithms.randomcutforest import forest

    X, _ = _with_anomalies(n=2000, anomalies=0)
    model = forest.build(X, 50, 256, seed=0)
    far = model.score(np.full((1, 5), 1e9))[0]
    assert far == pytest.approx(math.log2(257), rel=1e-6)
    near = model.score(X[:200])
    assert near.max() < far and near.min() > 0


def test_train_bad_hyperparameters_fail_naming_them(tmp_path):
    X, _ = _with_anomalies(n=200, anomalies=0)
    root = ml_root(tmp_path, {"feature_dim": 5, "num_trees": 10}, {"train": (X, None)})
    assert run_training("randomcutforest", root).returncode == 1
    assert "num_trees" in (root / "output" / "failure").read_text()
    root = ml_root(tmp_path / "b", {"feature_dim": 5, "eval_metrics": '["f1"]'}, {"train": (X, None)})
    assert run_training("randomcutforest", root).returncode == 1
    assert "eval_metrics" in (root / "output" / "failure").read_text()
