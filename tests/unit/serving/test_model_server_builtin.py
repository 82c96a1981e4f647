"""Built-in XGBoost behind the model server, as a real subprocess."""

from __future__ import annotations

import socket

import httpx
import numpy as np

from tests.unit.serving.conftest import csv_rows


def test_invocations_builtin_csv_returns_one_value_per_line(start_server, xgboost_model_dir, breast_cancer):
    import xgboost as xgb

    from opensage.algorithms.xgboost import load_booster

    features, _ = breast_cancer
    server = start_server(xgboost_model_dir, "builtin-xgboost")
    response = server.post(csv_rows(features[:5]), "text/csv", "text/csv")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv"
    lines = response.text.strip().split("\n")
    assert len(lines) == 5
    booster = load_booster(xgboost_model_dir / "xgboost-model")
    expected = booster.predict(xgb.DMatrix(features[:5].astype(np.float32)))
    np.testing.assert_allclose([float(v) for v in lines], expected, rtol=1e-5)


def test_invocations_builtin_json_accept_returns_predictions(start_server, xgboost_model_dir, breast_cancer):
    features, labels = breast_cancer
    server = start_server(xgboost_model_dir, "builtin-xgboost")
    response = server.post(csv_rows(features[:20]), "text/csv", "application/json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    scores = [p["score"] for p in response.json()["predictions"]]
    assert len(scores) == 20
    assert np.mean((np.array(scores) > 0.5) == labels[:20]) > 0.8


def test_invocations_builtin_wrong_width_returns_400_with_message(start_server, xgboost_model_dir):
    server = start_server(xgboost_model_dir, "builtin-xgboost")
    response = server.post("1,2,3\n", "text/csv")
    assert response.status_code == 400
    assert "3 feature columns" in response.text and "30" in response.text
    assert "POST /invocations -> 400" in server.stderr()
    # the server keeps serving after a bad request
    assert httpx.get(f"{server.url}/ping").status_code == 200


def test_invocations_builtin_unsupported_types_return_415_and_406(start_server, xgboost_model_dir, breast_cancer):
    features, _ = breast_cancer
    server = start_server(xgboost_model_dir, "builtin-xgboost")
    bad_type = server.post("{}", "application/x-made-up")
    assert bad_type.status_code == 415
    assert "not supported" in bad_type.text
    bad_accept = server.post(csv_rows(features[:1]), "text/csv", "image/png")
    assert bad_accept.status_code == 406
    garbage = server.post("a,b,c\n", "text/csv")
    assert garbage.status_code == 400


def test_ping_and_execution_parameters_answer_after_load(start_server, xgboost_model_dir):
    server = start_server(xgboost_model_dir, "builtin-xgboost", {"SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
                                                                  "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "4"})
    assert httpx.get(f"{server.url}/ping").status_code == 200
    params = httpx.get(f"{server.url}/execution-parameters").json()
    assert params == {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6}
    missing = httpx.get(f"{server.url}/nope")
    assert missing.status_code == 404 and "/invocations" in missing.text


def test_invocations_keep_alive_and_chunked_body_are_served(start_server, xgboost_model_dir, breast_cancer):
    features, _ = breast_cancer
    server = start_server(xgboost_model_dir, "builtin-xgboost")
    body = csv_rows(features[:2]).encode()
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        half = len(body) // 2
        chunked = (f"{half:x}\r\n".encode() + body[:half] + b"\r\n" +
                   f"{len(body) - half:x}\r\n".encode() + body[half:] + b"\r\n0\r\n\r\n")
        request = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        conn.sendall(request + request)  # two pipelined requests on one connection
        received = b""
        while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b"\n"):
            chunk = conn.recv(65536)
            assert chunk, received
            received += chunk
    assert received.count(b"HTTP/1.1 200 OK") == 2


def test_model_server_missing_model_exits_with_clear_error(start_server, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    server = start_server(empty, "builtin-xgboost", ready=False)
    assert server.proc.wait(timeout=20) == 1
    assert "xgboost-model" in server.stderr()


def test_invocations_custom_attributes_not_echoed_by_builtin(start_server, xgboost_model_dir, breast_cancer):
    features, _ = breast_cancer
    server = start_server(xgboost_model_dir, "builtin-xgboost")
    response = server.post(csv_rows(features[:1]), "text/csv", None,
                           **{"X-Amzn-SageMaker-Custom-Attributes": "trace=1"})
    assert response.status_code == 200
    assert "x-amzn-sagemaker-custom-attributes" not in response.headers
