"""Built-in k-means: train (process) -> model_algo-1 -> serve, test:msd / test:ssd, quality vs scikit-learn."""

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

    return load_digits().data.astype(np.float32)


def test_train_process_test_metrics_then_serve_closest_cluster(tmp_path):
    X = _digits()
    root = ml_root(tmp_path, {"k": 10, "feature_dim": 64, "mini_batch_size": 500, "force_dense": "True",
                              "eval_metrics": '["msd", "ssd"]'}, {"train": (X, None), "test": (X[:300], None)})
    result = run_training("kmeans", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = quality_metrics(result.stdout)
    assert metrics["test:ssd"] == pytest.approx(metrics["test:msd"] * 300, rel=1e-6)

    h = handler("kmeans", root / "model")
    records = sdk_records(invoke(h, recordio_bytes(X[:300]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf").body)
    clusters = [r.label["closest_cluster"].float32_tensor.values[0] for r in records]
    distances = np.array([r.label["distance_to_cluster"].float32_tensor.values[0] for r in records])
    assert set(clusters) <= set(map(float, range(10))) and len(set(clusters)) > 5
    assert float(np.mean(distances ** 2)) == pytest.approx(metrics["test:msd"], rel=1e-4)
    as_json = json.loads(invoke(h, b"\n".join(b",".join(b"%g" % v for v in row) for row in X[:3]), "text/csv",
                                "application/json").body)
    assert [p["closest_cluster"] for p in as_json["predictions"]] == clusters[:3]
    csv = invoke(h, recordio_bytes(X[:2]), "application/x-recordio-protobuf", "text/csv").body.decode()
    assert csv.splitlines()[0].split(",")[0] == repr(clusters[0])


def test_train_missing_k_fails_naming_it(tmp_path):
    root = ml_root(tmp_path, {"feature_dim": 64}, {"train": (_digits()[:50], None)})
    assert run_training("kmeans", root).returncode == 1
    assert "'k' is a required property" in (root / "output" / "failure").read_text()


def test_train_feature_dim_mismatch_or_too_few_rows_fails(tmp_path):
    root = ml_root(tmp_path, {"k": 3, "feature_dim": 10}, {"train": (_digits()[:50], None)})
    with pytest.raises(Exception, match="feature_dim is 10"):
        train_in_process("kmeans", root)
    root = ml_root(tmp_path / "b", {"k": 30, "feature_dim": 64}, {"train": (_digits()[:20], None)})
    with pytest.raises(Exception, match="k is 30"):
        train_in_process("kmeans", root)


@pytest.mark.parametrize(("init_method", "mini_batch_size"), [("random", 5000), ("kmeans++", 200)])
def test_train_inertia_within_one_percent_of_sklearn_kmeans(tmp_path, init_method, mini_batch_size):
    """Digits (bundled, 1797 x 64), k=10: sum of squared distances of the served model vs KMeans(n_init=10)."""
    from sklearn.cluster import KMeans

    X = _digits()
    reference = KMeans(10, n_init=10, random_state=0).fit(X).inertia_
    root = ml_root(tmp_path, {"k": 10, "feature_dim": 64, "mini_batch_size": mini_batch_size,
                              "init_method": init_method, "eval_metrics": '["ssd"]'}, {"train": (X, None)})
    train_in_process("kmeans", root)
    body = invoke(handler("kmeans", root / "model"), recordio_bytes(X), "application/x-recordio-protobuf",
                  "application/json").body
    ssd = float(sum(p["distance_to_cluster"] ** 2 for p in json.loads(body)["predictions"]))
    assert ssd <= reference * 1.01, (ssd, reference)
