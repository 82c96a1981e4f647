import json

import numpy as np
import pytest

from opensage.algorithms import recordio
from opensage.algorithms.xgboost import save_booster, serve


def _train(tmp_path, params, y, X):
    import xgboost as xgb

    booster = xgb.train(params, xgb.DMatrix(X, label=y), num_boost_round=5)
    save_booster(booster, tmp_path / "xgboost-model")
    return serve.load(tmp_path), booster


@pytest.fixture
def binary_model(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.random((200, 3)).astype(np.float32)
    y = (X[:, 0] > 0.5).astype(np.float32)
    model, booster = _train(tmp_path, {"objective": "binary:logistic"}, y, X)
    return model, booster, X


def test_predict_csv_default_accept_one_value_per_line(binary_model):
    model, booster, X = binary_model
    body, content_type = serve.predict(model, b"0.9,0.1,0.2\n0.1,0.5,0.5\n", "text/csv", None)
    assert content_type == "text/csv"
    values = [float(v) for v in body.decode().strip().split("\n")]
    assert len(values) == 2 and values[0] > 0.5 > values[1]


def test_predict_json_scores_match_booster(binary_model):
    import xgboost as xgb

    model, booster, X = binary_model
    payload = "\n".join(",".join(str(v) for v in row) for row in X[:3]).encode()
    body, content_type = serve.predict(model, payload, "text/csv", "application/json")
    scores = [p["score"] for p in json.loads(body)["predictions"]]
    np.testing.assert_allclose(scores, booster.predict(xgb.DMatrix(X[:3])), rtol=1e-6)
    assert content_type == "application/json"


def test_predict_jsonlines_and_libsvm_input(binary_model):
    model, _, _ = binary_model
    body, content_type = serve.predict(model, b"0:0.9 1:0.1\n0:0.1\n", "text/libsvm", "application/jsonlines")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert content_type == "application/jsonlines" and len(lines) == 2 and "score" in lines[0]


def test_predict_recordio_in_and_out(binary_model):
    model, _, X = binary_model
    body, content_type = serve.predict(model, recordio.encode_dense(X[:4]), "application/x-recordio-protobuf",
                                       "application/x-recordio-protobuf")
    records = recordio.read_records(body)
    assert content_type == "application/x-recordio-protobuf" and len(records) == 4
    assert len(records[0].label["score"].float32_tensor.values) == 1


def test_predict_multiclass_csv_comma_separated_probabilities(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.random((150, 2)).astype(np.float32)
    y = (X[:, 0] * 3).astype(int).astype(np.float32)
    model, _ = _train(tmp_path, {"objective": "multi:softprob", "num_class": 3}, y, X)
    body, _ = serve.predict(model, b"0.1,0.5\n0.9,0.5\n", "text/csv", "text/csv")
    rows = [[float(v) for v in line.split(",")] for line in body.decode().strip().split("\n")]
    assert len(rows) == 2 and all(len(r) == 3 for r in rows)
    assert abs(sum(rows[0]) - 1) < 1e-5 and np.argmax(rows[0]) == 0 and np.argmax(rows[1]) == 2


def test_predict_unsupported_accept_raises_406(binary_model):
    with pytest.raises(serve.InferenceError) as info:
        serve.predict(binary_model[0], b"1,2,3", "text/csv", "image/png")
    assert info.value.status == 406


def test_predict_unsupported_content_type_raises_415(binary_model):
    with pytest.raises(serve.InferenceError) as info:
        serve.predict(binary_model[0], b"{}", "application/xml", "text/csv")
    assert info.value.status == 415


def test_predict_too_many_columns_raises(binary_model):
    with pytest.raises(serve.InferenceError, match="4 feature columns but the model was trained on 3"):
        serve.predict(binary_model[0], b"1,2,3,4", "text/csv", "text/csv")
