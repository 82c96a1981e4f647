"""Built-in factorization machines: sparse recordIO training as AWS's MovieLens notebook sends it -> test
metrics -> served scores equal to the FM formula; quality vs scikit-learn's linear models (the FM's linear
part must match them on linear data and beat them where the label depends on pairwise interactions)."""

import json
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
import scipy.sparse as sp

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

USERS, ITEMS = 80, 100


def _ratings(n=12000, seed=0):
    """MovieLens-like one-hot (user, item) rows; the label is 1 when the user's latent taste agrees with the
    item's (a pure interaction a linear model cannot express) — the notebook's 'rating >= 4' set-up."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(USERS, 4)), rng.normal(size=(ITEMS, 4))
    users, items = rng.integers(0, USERS, n), rng.integers(0, ITEMS, n)
    y = ((u[users] * v[items]).sum(1) + 0.5 * rng.normal(size=USERS)[users] > 0).astype(np.float32)
    X = sp.csr_matrix((np.ones(2 * n, np.float32), (np.repeat(np.arange(n), 2), np.ravel(np.c_[users, USERS + items]))),
                      shape=(n, USERS + ITEMS), dtype=np.float32)
    return X, y


HP = {"feature_dim": USERS + ITEMS, "num_factors": 8, "predictor_type": "binary_classifier", "epochs": 30,
      "mini_batch_size": 200, "factors_lr": 0.01, "linear_lr": 0.01, "factors_init_sigma": 0.1}


def test_train_process_sparse_recordio_beats_logistic_regression_then_serves_fm_formula(tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = _ratings()
    root = ml_root(tmp_path, HP, {"train": (X[:10000], y[:10000]), "test": (X[10000:], y[10000:])})
    result = run_training("factorization_machines", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = quality_metrics(result.stdout)
    linear = LogisticRegression(max_iter=1000).fit(X[:10000], y[:10000]).score(X[10000:], y[10000:])
    assert metrics["test:binary_classification_accuracy"] > linear + 0.2
    assert {"test:binary_classification_cross_entropy", "test:binary_f_beta",
            "train:binary_classification_accuracy"} <= set(metrics)
    assert "epoch=29, train binary_classification_cross_entropy <loss>=" in result.stdout

    from opensage.algorithms.factorization_machines.serve import load

    model = load(root / "model")
    rows = X[10000:10020].toarray()
    pairwise = np.array([sum(model.factors[i] @ model.factors[j] * r[i] * r[j]
                             for i in range(len(r)) for j in range(i + 1, len(r)) if r[i] and r[j]) for r in rows])
    expected = 1 / (1 + np.exp(-(model.bias + rows @ model.linear + pairwise)))
    h = handler("factorization-machines", root / "model")
    records = sdk_records(invoke(h, recordio_bytes(X[10000:10020]), "application/x-recordio-protobuf",
                                 "application/x-recordio-protobuf").body)
    scores = np.array([r.label["score"].float32_tensor.values[0] for r in records])
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    labels = [r.label["predicted_label"].float32_tensor.values[0] for r in records]
    assert labels == [float(s > 0.5) for s in scores]
    as_json = json.loads(invoke(h, json.dumps({"instances": [{"features": row.tolist()} for row in rows[:3]]}).encode(),
                                "application/json", "application/json").body)
    assert [p["predicted_label"] for p in as_json["predictions"]] == [int(v) for v in labels[:3]]
    assert as_json["predictions"][0]["score"] == pytest.approx(scores[0], rel=1e-5)


def test_train_regressor_rmse_within_one_percent_of_linear_regression(tmp_path):
    """Diabetes (bundled, 442 x 10, standardised), split 350 / 92: test:rmse vs LinearRegression."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    X, y = load_diabetes(return_X_y=True)
    X, y = (X / X.std(axis=0)).astype(np.float32), y.astype(np.float32)
    root = ml_root(tmp_path, {"feature_dim": 10, "num_factors": 2, "predictor_type": "regressor", "epochs": 300,
                              "mini_batch_size": 50, "bias_lr": 1, "linear_lr": 0.1, "factors_lr": 0.001,
                              "bias_wd": 0, "linear_wd": 0}, {"train": (X[:350], y[:350]), "test": (X[350:], y[350:])})
    result = run_training("factorization_machines", root)
    assert result.returncode == 0, result.stderr[-2000:]
    reference = np.sqrt(np.mean((LinearRegression().fit(X[:350], y[:350]).predict(X[350:]) - y[350:]) ** 2))
    assert quality_metrics(result.stdout)["test:rmse"] <= reference * 1.01
    body = invoke(handler("factorization-machines", root / "model"), recordio_bytes(X[:2]),
                  "application/x-recordio-protobuf", "application/json").body
    assert set(json.loads(body)["predictions"][0]) == {"score"}


def test_train_csv_channel_or_non_binary_labels_fail_naming_them(tmp_path):
    X, y = _ratings(200)
    root = ml_root(tmp_path, HP, {"train": b"1,0,1\n0,1,0\n"}, {"train": {"ContentType": "text/csv"}})
    assert run_training("factorization_machines", root).returncode == 1
    assert "text/csv" in (root / "output" / "failure").read_text()
    root = ml_root(tmp_path / "b", HP, {"train": (X, y * 3)})
    with pytest.raises(Exception, match="labels must be 0 or 1"):
        train_in_process("factorization_machines", root)


def test_train_init_methods_constant_and_uniform_applied(tmp_path):
    from opensage.algorithms.factorization_machines import hyperparameters, train

    X, y = _ratings(500)
    hp = hyperparameters.parse({**{k: str(v) for k, v in HP.items()}, "epochs": "1", "linear_init_method": "constant",
                                "linear_init_value": "0.5", "linear_lr": "0", "factors_init_method": "uniform",
                                "factors_init_scale": "0.2", "factors_lr": "0"})
    model = train.fit(X, y, hp)
    assert np.all(model.linear == 0.5) and np.abs(model.factors).max() <= 0.2 and model.factors.std() > 0.05
