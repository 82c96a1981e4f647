"""One check every first-party built-in passes (like scikit-learn's ``check_estimator``): trains from the SDK's
recordIO-protobuf, writes ``model_algo-1``, serves every documented Accept for every request format, refuses
bad requests with the right 4xx and names a missing required hyperparameter in the failure file."""

import json
import os
from dataclasses import dataclass

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest

from tests.algorithms.firstparty_support import (
    handler,
    invoke,
    ml_root,
    recordio_bytes,
    run_training,
    sdk_records,
    train_in_process,
)


@dataclass(frozen=True)
class Case:
    repository: str
    module: str
    hyperparameters: dict
    supervised: bool
    required: str
    outputs: tuple[str, ...]
    json_key: str = "predictions"
    accepts: tuple[str, ...] = ("application/json", "application/jsonlines", "application/x-recordio-protobuf")


CASES = [
    Case("linear-learner", "linear_learner", {"predictor_type": "binary_classifier", "epochs": 2}, True,
         "predictor_type", ("score", "predicted_label")),
    Case("kmeans", "kmeans", {"k": 3, "feature_dim": 4}, False, "k", ("closest_cluster", "distance_to_cluster"),
         accepts=("application/json", "application/jsonlines", "application/x-recordio-protobuf", "text/csv")),
    Case("pca", "pca", {"num_components": 2, "feature_dim": 4, "mini_batch_size": 10}, False, "num_components",
         ("projection",), json_key="projections"),
]


def _iris():
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return X.astype(np.float32), (y == 0).astype(np.float32)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.repository)
def trained(request, tmp_path_factory):
    case = request.param
    X, y = _iris()
    root = ml_root(tmp_path_factory.mktemp(case.module), case.hyperparameters,
                   {"train": (X, y if case.supervised else None)})
    train_in_process(case.module, root)
    return case, root, handler(case.repository, root / "model")


def test_train_writes_model_algo_1_only(trained):
    _, root, _ = trained
    assert sorted(p.name for p in (root / "model").iterdir()) == ["model_algo-1"]


def test_serve_every_request_format_and_accept_agree(trained):
    case, _, h = trained
    X, _ = _iris()
    rows = X[:3]
    requests = {
        "text/csv": "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode(),
        "application/json": json.dumps({"instances": [{"features": row.tolist()} for row in rows]}).encode(),
        "application/jsonlines": "".join(json.dumps({"features": row.tolist()}) + "\n" for row in rows).encode(),
        "application/x-recordio-protobuf": recordio_bytes(rows),
    }
    answers = []
    for content_type, body in requests.items():
        response = invoke(h, body, content_type, "application/json")
        assert response.status == 200, (content_type, response.body[:300])
        answers.append(json.loads(response.body))
    assert all(a == answers[0] for a in answers)
    predictions = answers[0][case.json_key]
    assert len(predictions) == 3 and set(predictions[0]) == set(case.outputs)
    for accept in case.accepts:
        response = invoke(h, requests["text/csv"], "text/csv", accept)
        assert response.status == 200 and response.content_type == accept
        if accept == "application/x-recordio-protobuf":
            assert set(sdk_records(response.body)[0].label) == set(case.outputs)
        if accept == "application/jsonlines":
            assert [json.loads(line) for line in response.body.decode().splitlines()] == predictions


@pytest.mark.parametrize(("body", "content_type", "accept", "status"), [
    (b"1,2", "text/csv", "application/json", 400),  # wrong width
    (b"", "text/csv", "application/json", 400),
    (b'{"instances": []}', "application/json", "application/json", 400),
    (b"nan,1,2,3", "text/csv", "application/json", 400),
    (b"\x01\x02\x03\x04", "application/x-recordio-protobuf", "application/json", 400),
    (b"1,2,3,4", "application/x-npy", "application/json", 415),
    (b"1,2,3,4", "text/csv", "image/png", 406),
])
def test_serve_bad_request_answers_4xx_without_traceback(trained, body, content_type, accept, status):
    _, _, h = trained
    response = invoke(h, body, content_type, accept)
    assert response.status == status, response.body[:300]
    assert b"Traceback" not in response.body


def test_train_missing_required_hyperparameter_failure_names_it(trained, tmp_path):
    case, _, _ = trained
    X, y = _iris()
    hyperparameters = {k: v for k, v in case.hyperparameters.items() if k != case.required}
    root = ml_root(tmp_path, hyperparameters, {"train": (X, y if case.supervised else None)})
    result = run_training(case.module, root)
    assert result.returncode == 1
    failure = (root / "output" / "failure").read_text()
    assert f"'{case.required}' is a required property" in failure and len(failure) <= 1024
