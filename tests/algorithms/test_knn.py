"""Built-in k-NN: train (process) -> model_algo-1 -> serve (verbose labels / distances), test:accuracy /
test:mse, quality vs scikit-learn's KNeighbors on bundled data."""

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


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return X[order].astype(np.float32), y[order].astype(np.float32)


def _accuracy(h, X, y):
    body = invoke(h, recordio_bytes(X), "application/x-recordio-protobuf", "application/json").body
    return float(np.mean(np.array([p["predicted_label"] for p in json.loads(body)["predictions"]]) == y))


def test_train_process_test_accuracy_then_serve_verbose_neighbours_match_sklearn(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _digits()
    root = ml_root(tmp_path, {"feature_dim": 64, "k": 5, "predictor_type": "classifier", "sample_size": 5000},
                   {"train": (X[:1400], y[:1400]), "test": (X[1400:], y[1400:])})
    result = run_training("knn", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    reference = KNeighborsClassifier(5).fit(X[:1400], y[:1400])
    assert quality_metrics(result.stdout)["test:accuracy"] >= reference.score(X[1400:], y[1400:]) - 0.01

    h = handler("knn", root / "model")
    response = invoke(h, recordio_bytes(X[1400:1410]), "application/x-recordio-protobuf",
                      "application/json; verbose=true")
    assert response.status == 200 and response.content_type == "application/json"
    predictions = json.loads(response.body)["predictions"]
    distances, indices = reference.kneighbors(X[1400:1410])
    for row, dist, idx in zip(predictions, distances, indices, strict=True):
        assert set(row) == {"predicted_label", "labels", "distances"}
        assert row["distances"] == sorted(row["distances"])
        np.testing.assert_allclose(row["distances"], dist, rtol=1e-4, atol=1e-3)
        assert row["labels"] == [float(v) for v in y[:1400][idx]]
    plain = json.loads(invoke(h, recordio_bytes(X[1400:1410]), "application/x-recordio-protobuf",
                              "application/json").body)["predictions"]
    assert plain == [{"predicted_label": p["predicted_label"]} for p in predictions]
    records = sdk_records(invoke(h, recordio_bytes(X[1400:1402]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf;verbose=true").body)
    assert len(records[0].label["distances"].float32_tensor.values) == 5


def test_train_regressor_test_mse_within_one_percent_of_sklearn(tmp_path):
    """Diabetes (bundled, 442 x 10), k=10: test:mse vs KNeighborsRegressor(10) on the same split."""
    from sklearn.datasets import load_diabetes
    from sklearn.neighbors import KNeighborsRegressor

    X, y = load_diabetes(return_X_y=True)
    X, y = X.astype(np.float32), y.astype(np.float32)
    root = ml_root(tmp_path, {"feature_dim": 10, "k": 10, "predictor_type": "regressor", "sample_size": 400},
                   {"train": (X[:350], y[:350]), "test": (X[350:], y[350:])})
    result = run_training("knn", root)
    assert result.returncode == 0, result.stderr[-2000:]
    reference = np.mean((KNeighborsRegressor(10).fit(X[:350], y[:350]).predict(X[350:]) - y[350:]) ** 2)
    assert quality_metrics(result.stdout)["test:mse"] <= reference * 1.01


@pytest.mark.parametrize("extra", [{"index_type": "faiss.IVFFlat"},
                                   {"index_type": "faiss.IVFFlat", "faiss_index_ivf_nlists": 16},
                                   {"index_type": "faiss.IVFPQ", "faiss_index_pq_m": 8},
                                   {"index_metric": "COSINE"}])
def test_train_approximate_index_accuracy_within_one_percent_of_exact(tmp_path, extra):
    """Digits, k=5: the served accuracy of an IVF / PQ / cosine index vs scikit-learn's exact search."""
    from sklearn.neighbors import KNeighborsClassifier

    X, y = _digits()
    exact = KNeighborsClassifier(5).fit(X[:1400], y[:1400]).score(X[1400:], y[1400:])
    root = ml_root(tmp_path, {"feature_dim": 64, "k": 5, "predictor_type": "classifier", "sample_size": 5000,
                              **extra}, {"train": (X[:1400], y[:1400])})
    train_in_process("knn", root)
    assert _accuracy(handler("knn", root / "model"), X[1400:], y[1400:]) >= exact - 0.01


@pytest.mark.parametrize("kind", ["sign", "fjlt"])
def test_train_dimension_reduction_keeps_distances_and_accuracy(tmp_path, kind):
    """Johnson-Lindenstrauss: pairwise distances after the projection to 32 of 64 dimensions stay within ~15%
    on average, and the reduced index still classifies digits (accuracy >= exact - 3 points)."""
    from sklearn.metrics import pairwise_distances
    from sklearn.neighbors import KNeighborsClassifier

    from opensage.algorithms.knn import index

    X, y = _digits()
    projection = index.projection(kind, 64, 32, seed=3)
    before, after = pairwise_distances(X[:200]), pairwise_distances(X[:200] @ projection)
    ratio = after[before > 0] / before[before > 0]
    assert abs(float(np.mean(ratio)) - 1.0) < 0.1 and float(np.std(ratio)) < 0.3
    root = ml_root(tmp_path, {"feature_dim": 64, "k": 5, "predictor_type": "classifier", "sample_size": 5000,
                              "dimension_reduction_type": kind, "dimension_reduction_target": 32},
                   {"train": (X[:1400], y[:1400])})
    train_in_process("knn", root)
    exact = KNeighborsClassifier(5).fit(X[:1400], y[:1400]).score(X[1400:], y[1400:])
    assert _accuracy(handler("knn", root / "model"), X[1400:], y[1400:]) >= exact - 0.03


def test_train_sample_size_limits_indexed_rows(tmp_path):
    from opensage.algorithms.knn.serve import load

    X, y = _digits()
    root = ml_root(tmp_path, {"feature_dim": 64, "k": 3, "predictor_type": "classifier", "sample_size": 300},
                   {"train": (X, y)})
    train_in_process("knn", root)
    model = load(root / "model")
    assert model.index.size == 300 and len(model.labels) == 300


def test_train_unlabelled_or_bad_reduction_fails_naming_it(tmp_path):
    X, _ = _digits()
    root = ml_root(tmp_path, {"feature_dim": 64, "k": 3, "predictor_type": "classifier", "sample_size": 10},
                   {"train": (X[:50], None)})
    assert run_training("knn", root).returncode == 1
    assert "carry no label" in (root / "output" / "failure").read_text()
    root = ml_root(tmp_path / "b", {"feature_dim": 64, "k": 3, "predictor_type": "classifier", "sample_size": 10,
                                    "dimension_reduction_type": "sign"}, {"train": (X[:50], _digits()[1][:50])})
    assert run_training("knn", root).returncode == 1
    assert "'dimension_reduction_target' is a required property" in (root / "output" / "failure").read_text()
