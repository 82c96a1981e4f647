"""Built-in linear learner: train (process) -> model_algo-1 -> serve, metrics, failures, quality vs scikit-learn."""

import json
import os
import shutil

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


def _split(X, y, seed=0, test_size=0.3):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return X.astype(np.float32), y.astype(np.float32)


def test_train_binary_process_metrics_then_serve_every_format(tmp_path):
    X, y = _breast_cancer()
    Xtr, Xte, ytr, yte = _split(X, y)
    Xtr, Xva, ytr, yva = _split(Xtr, ytr, test_size=0.25)
    root = ml_root(tmp_path, {"predictor_type": "binary_classifier", "feature_dim": 30, "mini_batch_size": 100},
                   {"train": (Xtr, ytr), "validation": (Xva, yva), "test": (Xte, yte)})
    result = run_training("linear_learner", root)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (root / "model" / "model_algo-1").is_file()
    metrics = quality_metrics(result.stdout)
    assert metrics["test:binary_classification_accuracy"] > 0.9
    assert {"validation:recall", "test:roc_auc_score", "train:precision", "test:binary_f_1.000",
            "test:binary_classification_cross_entropy_objective"} <= set(metrics)
    assert "epoch=0, validation binary_classification_cross_entropy_objective <loss>=" in result.stdout

    h = handler("linear-learner", root / "model")
    recordio = invoke(h, recordio_bytes(Xte[:5]), "application/x-recordio-protobuf",
                      "application/x-recordio-protobuf")
    assert recordio.status == 200 and recordio.content_type == "application/x-recordio-protobuf"
    records = sdk_records(recordio.body)
    labels = [r.label["predicted_label"].float32_tensor.values[0] for r in records]
    scores = [r.label["score"].float32_tensor.values[0] for r in records]
    assert len(records) == 5 and all(0.0 <= s <= 1.0 for s in scores)
    csv_body = "\n".join(",".join(repr(float(v)) for v in row) for row in Xte[:5]).encode()
    as_json = json.loads(invoke(h, csv_body, "text/csv", "application/json").body)
    assert [p["predicted_label"] for p in as_json["predictions"]] == [int(v) for v in labels]
    assert as_json["predictions"][0]["score"] == pytest.approx(scores[0], rel=1e-5)
    jsonl = invoke(h, json.dumps({"instances": [{"features": Xte[0].tolist()}]}).encode(), "application/json",
                   "application/jsonlines")
    assert json.loads(jsonl.body.decode().splitlines()[0])["predicted_label"] == int(labels[0])
    default = invoke(h, csv_body, "text/csv", None)
    assert default.content_type == "application/json"


def test_train_bad_or_missing_hyperparameter_fails_naming_it(tmp_path):
    X, y = _breast_cancer()
    root = ml_root(tmp_path, {"feature_dim": 30}, {"train": (X[:50], y[:50])})
    result = run_training("linear_learner", root)
    assert result.returncode == 1
    assert "'predictor_type' is a required property" in (root / "output" / "failure").read_text()
    shutil.rmtree(tmp_path / "ml")
    root = ml_root(tmp_path, {"predictor_type": "binary_classifier", "epochs": "many"}, {"train": (X[:50], y[:50])})
    assert run_training("linear_learner", root).returncode == 1
    assert "'many' is not a valid value for hyperparameter 'epochs'" in (root / "output" / "failure").read_text()


def test_train_wrong_labels_or_feature_dim_fails_with_client_error(tmp_path):
    X, y = _breast_cancer()
    root = ml_root(tmp_path, {"predictor_type": "binary_classifier"}, {"train": (X[:40], y[:40] + 1)})
    with pytest.raises(Exception, match="labels 0 or 1"):
        train_in_process("linear_learner", root)
    shutil.rmtree(tmp_path / "ml")
    root = ml_root(tmp_path, {"predictor_type": "binary_classifier", "feature_dim": 10}, {"train": (X[:40], y[:40])})
    with pytest.raises(Exception, match="feature_dim is 10"):
        train_in_process("linear_learner", root)


def test_train_unknown_channel_fails_naming_it(tmp_path):
    X, y = _breast_cancer()
    root = ml_root(tmp_path, {"predictor_type": "binary_classifier"}, {"train": (X[:40], y[:40]),
                                                                       "extra": (X[:40], y[:40])})
    with pytest.raises(Exception, match="'extra'"):
        train_in_process("linear_learner", root)


def _accuracy(h, X, y):
    body = invoke(h, recordio_bytes(X), "application/x-recordio-protobuf", "application/json").body
    predicted = np.array([p["predicted_label"] for p in json.loads(body)["predictions"]])
    return float(np.mean(predicted == y))


@pytest.mark.parametrize("dataset", ["breast_cancer", "digits"])
def test_train_classifier_accuracy_within_one_percent_of_sklearn_logistic_regression(tmp_path, dataset):
    """Mean test accuracy over three stratified splits (train / validation / test = 52.5 / 17.5 / 30 %):
    linear learner (defaults, mini_batch_size 100) vs LogisticRegression (defaults) on standardised data."""
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    X, y = X.astype(np.float32), y.astype(np.float32)
    hp = {"predictor_type": "binary_classifier"} if dataset == "breast_cancer" else \
        {"predictor_type": "multiclass_classifier", "num_classes": 10}
    ours, reference = [], []
    for seed in range(3):
        Xtr, Xte, ytr, yte = _split(X, y, seed)
        Xtr, Xva, ytr, yva = _split(Xtr, ytr, seed, test_size=0.25)
        ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(Xtr, ytr)
        reference.append(ref.score(Xte, yte))
        run = tmp_path / str(seed)
        root = ml_root(run, {**hp, "feature_dim": X.shape[1], "mini_batch_size": 100},
                       {"train": (Xtr, ytr), "validation": (Xva, yva)})
        train_in_process("linear_learner", root)
        ours.append(_accuracy(handler("linear-learner", root / "model"), Xte, yte))
    assert np.mean(ours) >= np.mean(reference) - 0.01, (ours, reference)


def test_train_regressor_mse_close_to_sklearn_linear_regression(tmp_path):
    """Diabetes (bundled): held-out MSE within 2 % of LinearRegression's; regression has only ``score``."""
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import train_test_split

    X, y = load_diabetes(return_X_y=True)
    X, y = X.astype(np.float32), y.astype(np.float32)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    reference = float(np.mean((LinearRegression().fit(Xtr, ytr).predict(Xte) - yte) ** 2))
    root = ml_root(tmp_path, {"predictor_type": "regressor", "feature_dim": 10, "mini_batch_size": 50},
                   {"train": (Xtr, ytr), "test": (Xte, yte)})
    train_in_process("linear_learner", root)
    body = invoke(handler("linear-learner", root / "model"), recordio_bytes(Xte), "application/x-recordio-protobuf",
                  "application/json").body
    predictions = json.loads(body)["predictions"]
    assert set(predictions[0]) == {"score"}
    mse = float(np.mean((np.array([p["score"] for p in predictions]) - yte) ** 2))
    assert mse <= reference * 1.02, (mse, reference)


def test_serve_bad_requests_answer_4xx(tmp_path):
    X, y = _breast_cancer()
    root = ml_root(tmp_path, {"predictor_type": "binary_classifier", "epochs": 2}, {"train": (X[:100], y[:100])})
    train_in_process("linear_learner", root)
    h = handler("linear-learner", root / "model")
    assert invoke(h, b"1,2,3", "text/csv", "application/json").status == 400  # 3 features, model has 30
    assert invoke(h, b"1,2", "image/png", "application/json").status == 415
    assert invoke(h, recordio_bytes(X[:1]), "application/x-recordio-protobuf", "text/html").status == 406
    assert b"feature_dim" in invoke(h, b"1,2,3", "text/csv", "application/json").body


def test_train_csv_label_first_channel_same_model_as_recordio(tmp_path):
    X, y = _breast_cancer()
    hp = {"predictor_type": "binary_classifier", "epochs": 3, "num_models": 2}
    rows = np.column_stack([y[:200], X[:200]])
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    csv_root = ml_root(tmp_path / "csv", hp, {"train": csv.encode()}, {"train": {"ContentType": "text/csv"}})
    pb_root = ml_root(tmp_path / "pb", hp, {"train": (X[:200], y[:200])})
    train_in_process("linear_learner", csv_root)
    train_in_process("linear_learner", pb_root)
    body = recordio_bytes(X[200:220])
    answers = [json.loads(invoke(handler("linear-learner", root / "model"), body, "application/x-recordio-protobuf",
                                 "application/json").body) for root in (csv_root, pb_root)]
    assert answers[0] == answers[1]


def test_train_sparse_records_then_serve_sparse_json(tmp_path):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    X = sp.random(400, 50, density=0.1, format="csr", random_state=0, dtype=np.float32)
    w = rng.normal(size=50)
    y = (X @ w > 0).astype(np.float32)
    root = ml_root(tmp_path, {"predictor_type": "binary_classifier", "feature_dim": 50, "mini_batch_size": 50},
                   {"train": (X, y)})
    train_in_process("linear_learner", root)
    h = handler("linear-learner", root / "model")
    row = X[0].tocoo()
    request = {"instances": [{"data": {"features": {"values": row.data.tolist(), "keys": row.col.tolist(),
                                                    "shape": [50]}}}]}
    answer = json.loads(invoke(h, json.dumps(request).encode(), "application/json", "application/json").body)
    dense = json.loads(invoke(h, recordio_bytes(X[:1].toarray()), "application/x-recordio-protobuf",
                              "application/json").body)
    assert answer == dense
    assert _accuracy(h, X.toarray(), y) > 0.85


def test_candidates_tuning_job_trains_one_model_auto_several():
    from opensage.algorithms.linear_learner import hyperparameters
    from opensage.algorithms.linear_learner.train import candidates

    hp = hyperparameters.parse({"predictor_type": "regressor"})
    assert len(candidates(hp, tuning=False)) == 8
    assert len({(c.learning_rate, c.wd) for c in candidates(hp, tuning=False)}) == 8
    assert len(candidates(hp, tuning=True)) == 1
    fixed = hyperparameters.parse({"predictor_type": "regressor", "learning_rate": "0.05", "wd": "0.1",
                                   "num_models": "3"})
    assert {(c.learning_rate, c.wd) for c in candidates(fixed, tuning=False)} == {(0.05, 0.1)}


def test_train_regressor_epoch_objective_reported_in_label_units(tmp_path):
    """Per-epoch ``validation:objective_loss`` (squared loss) is on the same scale as the final validation mse,
    though training runs on normalised labels."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = X.astype(np.float32), y.astype(np.float32)
    root = ml_root(tmp_path, {"predictor_type": "regressor", "feature_dim": 10, "mini_batch_size": 32},
                   {"train": (X[:300], y[:300]), "validation": (X[300:], y[300:])})
    result = run_training("linear_learner", root)
    assert result.returncode == 0, result.stdout[-2000:]
    epochs = [float(line.rsplit("=", 1)[1]) for line in result.stdout.splitlines()
              if "validation square_loss_objective <loss>=" in line and "epoch=" in line]
    final = quality_metrics(result.stdout)["validation:mse"]
    assert epochs and min(epochs) == pytest.approx(final, rel=0.25)
