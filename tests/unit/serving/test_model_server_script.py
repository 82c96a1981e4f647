"""Script mode (framework images): user modules and the framework default handlers, as real subprocesses."""

from __future__ import annotations

import io
import tarfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.unit.serving.conftest import csv_rows, write_code

SKLEARN_MODEL_FN = """
import os
import joblib

def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


@pytest.fixture(scope="module")
def sklearn_model(tmp_path_factory, breast_cancer):
    """A fitted LogisticRegression saved with joblib, and its predictions on the first rows."""
    import joblib
    from sklearn.linear_model import LogisticRegression

    features, labels = breast_cancer
    model = LogisticRegression(max_iter=5000).fit(features, labels)
    model_dir = tmp_path_factory.mktemp("sklearn-model")
    joblib.dump(model, model_dir / "model.joblib")
    return model_dir, model


def sklearn_dir(tmp_path: Path, sklearn_model, source: str = SKLEARN_MODEL_FN) -> Path:
    src, _ = sklearn_model
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.joblib").write_bytes((src / "model.joblib").read_bytes())
    write_code(model_dir, source)
    return model_dir


def test_invocations_sklearn_model_fn_uses_default_handlers(start_server, tmp_path, sklearn_model, breast_cancer):
    features, _ = breast_cancer
    _, model = sklearn_model
    server = start_server(sklearn_dir(tmp_path, sklearn_model), "sklearn")
    expected = model.predict(features[:4].astype(np.float32))
    as_json = server.post(csv_rows(features[:4]), "text/csv")  # default accept: application/json
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json() == expected.tolist()
    as_csv = server.post(csv_rows(features[:1]), "text/csv", "text/csv")
    assert as_csv.text == f"{expected[0]}\n"
    from_json = server.post(np.asarray(features[:4]).tolist().__repr__(), "application/json", "*/*")
    assert from_json.json() == expected.tolist()
    buffer = io.BytesIO()
    np.save(buffer, features[:4])
    from_npy = server.post(buffer.getvalue(), "application/x-npy", "application/x-npy")
    assert from_npy.headers["content-type"] == "application/x-npy"
    assert np.load(io.BytesIO(from_npy.content)).tolist() == model.predict(features[:4]).tolist()


def test_invocations_sklearn_bad_types_return_415_and_406(start_server, tmp_path, sklearn_model, breast_cancer):
    features, _ = breast_cancer
    server = start_server(sklearn_dir(tmp_path, sklearn_model), "sklearn")
    assert server.post("x", "application/x-made-up").status_code == 415
    assert server.post(csv_rows(features[:1]), "text/csv", "image/png").status_code == 406
    bad_csv = server.post("1,2\n3\n", "text/csv")
    assert bad_csv.status_code == 400 and "different numbers of columns" in bad_csv.text


def test_invocations_sklearn_default_accept_from_environment(start_server, tmp_path, sklearn_model, breast_cancer):
    features, _ = breast_cancer
    server = start_server(sklearn_dir(tmp_path, sklearn_model), "sklearn",
                          {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"})
    response = server.post(csv_rows(features[:3]), "text/csv")
    assert response.headers["content-type"] == "text/csv"
    assert len(response.text.strip().split("\n")) == 3


TRANSFORM_FN = """
import json

def model_fn(model_dir):
    return {"scale": 2.0}

def transform_fn(model, body, content_type, accept, context):
    values = json.loads(body)
    attributes = context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes")
    context.set_response_header(0, "X-Amzn-SageMaker-Custom-Attributes", f"echo={attributes}")
    return json.dumps({"scaled": [v * model["scale"] for v in values], "type": type(body).__name__}), "application/x-custom"
"""


def test_invocations_transform_fn_controls_body_type_and_custom_attributes(start_server, tmp_path):
    model_dir = tmp_path / "model"
    write_code(model_dir, TRANSFORM_FN)
    server = start_server(model_dir, "sklearn")
    response = server.post("[1, 2.5]", "application/json", None,
                           **{"X-Amzn-SageMaker-Custom-Attributes": "trace-id=7"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-custom"
    assert response.json() == {"scaled": [2.0, 5.0], "type": "str"}
    assert response.headers["x-amzn-sagemaker-custom-attributes"] == "echo=trace-id=7"


RAISING_INPUT_FN = """
def model_fn(model_dir):
    return object()

class BadRequest(Exception):
    status_code = 422

def input_fn(body, content_type):
    if body.startswith("teapot"):
        raise BadRequest("payload must not start with teapot")
    raise ValueError("input_fn cannot parse this payload: expected 3 columns")
"""


def test_invocations_input_fn_error_returns_status_message_and_traceback(start_server, tmp_path):
    model_dir = tmp_path / "model"
    write_code(model_dir, RAISING_INPUT_FN)
    server = start_server(model_dir, "sklearn")
    response = server.post("1,2\n", "text/csv")
    assert response.status_code == 500
    first, _, rest = response.text.partition("\n")
    assert first == "input_fn cannot parse this payload: expected 3 columns"
    assert "Traceback" in rest and "inference.py" in rest
    custom = server.post("teapot", "text/csv")
    assert custom.status_code == 422 and custom.text.startswith("payload must not start with teapot")
    assert "cannot parse this payload" in server.stderr()
    assert httpx.get(f"{server.url}/ping").status_code == 200


def test_model_server_transform_fn_with_input_fn_fails_at_load(start_server, tmp_path):
    model_dir = tmp_path / "model"
    write_code(model_dir, TRANSFORM_FN + "\ndef input_fn(body, content_type):\n    return body\n")
    server = start_server(model_dir, "sklearn", ready=False)
    assert server.proc.wait(timeout=20) == 1
    assert "transform_fn together with input_fn" in server.stderr()


def test_model_server_sklearn_without_model_fn_fails_at_load_naming_model_fn(start_server, tmp_path):
    model_dir = tmp_path / "model"
    write_code(model_dir, "def predict_fn(data, model):\n    return data\n")
    server = start_server(model_dir, "sklearn", ready=False)
    assert server.proc.wait(timeout=20) == 1
    assert "no default model_fn" in server.stderr()


SLOW_LOAD = """
import time

def model_fn(model_dir):
    time.sleep(1.5)
    return "model"

def transform_fn(model, body, content_type, accept):
    if body == "slow":
        time.sleep(1.5)
    return "done"
"""


def test_ping_returns_503_while_loading_then_200(start_server, tmp_path):
    model_dir = tmp_path / "model"
    write_code(model_dir, SLOW_LOAD)
    server = start_server(model_dir, "sklearn", ready=False)
    statuses = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and 200 not in statuses:
        try:
            statuses.append(httpx.get(f"{server.url}/ping", timeout=2).status_code)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    assert 503 in statuses and statuses[-1] == 200
    assert server.post("x", "text/plain").text == "done"


def test_sigterm_finishes_in_flight_request_then_exits_zero(start_server, tmp_path):
    model_dir = tmp_path / "model"
    write_code(model_dir, SLOW_LOAD)
    server = start_server(model_dir, "sklearn")
    result: dict[str, httpx.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("r", server.post("slow", "text/plain")))
    thread.start()
    time.sleep(0.5)
    assert server.stop(timeout=10) == 0
    thread.join(timeout=10)
    assert result["r"].status_code == 200 and result["r"].text == "done"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/ping", timeout=2)


def test_sigterm_with_two_workers_exits_zero(start_server, tmp_path, sklearn_model, breast_cancer):
    features, _ = breast_cancer
    server = start_server(sklearn_dir(tmp_path, sklearn_model), "sklearn",
                          {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"})
    for _ in range(4):
        assert server.post(csv_rows(features[:1]), "text/csv").status_code == 200
    assert server.stop(timeout=15) == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_invocations_pytorch_torchscript_default_handlers(start_server, tmp_path):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    torch.jit.save(torch.jit.script(net), str(model_dir / "model.pt"))
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
    with torch.no_grad():
        expected = net(torch.tensor(rows)).numpy()
    server = start_server(model_dir, "pytorch")
    response = server.post(str(rows), "application/json")
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json(), expected, rtol=1e-5)
    as_csv = server.post(csv_rows(rows), "text/csv", "text/csv")
    np.testing.assert_allclose(np.loadtxt(io.StringIO(as_csv.text), delimiter=","), expected, rtol=1e-5)


def test_model_server_pytorch_without_model_pt_names_the_file(start_server, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    server = start_server(model_dir, "pytorch", ready=False)
    assert server.proc.wait(timeout=30) == 1
    assert "missing file model.pt" in server.stderr()


XGB_SCRIPT = """
import os
import xgboost as xgb

def model_fn(model_dir):
    booster = xgb.Booster()
    booster.load_model(os.path.join(model_dir, "xgboost-model"))
    return booster
"""


def test_invocations_xgboost_script_mode_default_input_and_output(start_server, tmp_path, xgboost_model_dir,
                                                                    breast_cancer):
    features, _ = breast_cancer
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "xgboost-model").write_bytes((xgboost_model_dir / "xgboost-model").read_bytes())
    write_code(model_dir, XGB_SCRIPT, "serve.py")
    server = start_server(model_dir, "xgboost-script", {"SAGEMAKER_PROGRAM": "serve.py"})
    response = server.post(csv_rows(features[:3]), "text/csv", "text/csv")
    assert response.status_code == 200, response.text
    assert len(response.text.strip().split("\n")) == 3
    libsvm = "".join(" ".join(f"{i}:{v}" for i, v in enumerate(row)) + "\n" for row in features[:2])
    as_json = server.post(libsvm, "text/libsvm", "application/json")
    assert len(as_json.json()) == 2
    assert server.post("x", "application/x-made-up").status_code == 415


def test_model_server_submit_directory_tarball_is_loaded(start_server, tmp_path, sklearn_model, breast_cancer):
    features, _ = breast_cancer
    src, _ = sklearn_model
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.joblib").write_bytes((src / "model.joblib").read_bytes())
    source = tmp_path / "src"
    source.mkdir()
    (source / "entry.py").write_text(SKLEARN_MODEL_FN)
    archive = model_dir / "sourcedir.tar.gz"  # a local submit directory must be inside /opt/ml/model
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "entry.py", arcname="entry.py")
    server = start_server(model_dir, "sklearn", {"SAGEMAKER_PROGRAM": "entry.py",
                                                 "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/sourcedir.tar.gz"})
    assert server.post(csv_rows(features[:2]), "text/csv").status_code == 200


def test_model_server_requirements_txt_reexecs_under_venv(start_server, tmp_path):
    model_dir = tmp_path / "model"
    code = write_code(model_dir, "import sys\n\ndef model_fn(d):\n    return 0\n\n"
                                 "def transform_fn(m, body, ct, accept):\n    return sys.prefix\n")
    (code / "requirements.txt").write_text("numpy\n")  # already on the platform: resolves offline
    cache = tmp_path / "venvs"
    server = start_server(model_dir, "sklearn", {"OPENSAGE_VENV_CACHE": str(cache)})
    prefix = server.post("x", "text/plain").text
    assert prefix.startswith(str(cache)), prefix


def test_invocations_during_model_load_wait_for_it(start_server, tmp_path):
    model_dir = tmp_path / "model"
    write_code(model_dir, SLOW_LOAD)
    server = start_server(model_dir, "sklearn", ready=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            assert httpx.get(f"{server.url}/ping", timeout=2).status_code == 503
            break
        except httpx.TransportError:
            time.sleep(0.05)
    response = server.post("x", "text/plain")
    assert response.status_code == 200 and response.text == "done"


def test_resolve_code_dir_https_submit_directory_is_fetched_as_s3(monkeypatch, tmp_path):
    from opensage.frameworks import training
    from opensage.serving.model_server import resolve_code_dir

    fetched = []
    monkeypatch.setattr(training, "fetch_source", lambda uri, target, root=None: fetched.append(uri))
    resolve_code_dir(tmp_path, "https://s3.us-east-1.amazonaws.com/bucket1/code/sourcedir.tar.gz")
    assert fetched == ["s3://bucket1/code/sourcedir.tar.gz"]
