"""Inference pipelines: the plan (pipeline.json) and the pipeline front as a real model-server subprocess."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from opensage.serving.plan import PIPELINE_FILE, PIPELINE_KIND, plan_model_server
from tests.unit.serving.conftest import csv_rows, write_code

XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
SCALER = textwrap.dedent('''
    def model_fn(model_dir):
        return 0.5

    def predict_fn(data, model):
        return data * model
''')


@pytest.fixture
def scaler_dir(tmp_path: Path) -> Path:
    model_dir = tmp_path / "scaler"
    model_dir.mkdir()
    write_code(model_dir, SCALER)
    return model_dir


def _stage_from(dirs: dict[str, Path]):
    staged: list[str | None] = []

    def stage(url: str | None) -> Path:
        staged.append(url)
        return dirs[url or ""]

    stage.staged = staged  # type: ignore[attr-defined]
    return stage


def _pipeline_request(mode: str | None = None, hostnames: tuple[str, str] | None = None) -> dict:
    containers = [
        {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://b/scaler.tar.gz",
         "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}},
        {"Image": XGB_IMAGE, "ModelDataUrl": "s3://b/xgb.tar.gz"},
    ]
    if hostnames:
        for c, h in zip(containers, hostnames, strict=True):
            c["ContainerHostname"] = h
    request: dict = {"ModelName": "m", "Containers": containers}
    if mode:
        request["InferenceExecutionConfig"] = {"Mode": mode}
    return request


def _plan(tmp_path: Path, scaler_dir: Path, xgb_dir: Path, **kw):
    stage = _stage_from({"s3://b/scaler.tar.gz": scaler_dir, "s3://b/xgb.tar.gz": xgb_dir})
    return plan_model_server(_pipeline_request(**kw), stage, tmp_path / "plans"), stage


# ------------------------------------------------------------------------------------------------ plan
def test_plan_pipeline_writes_every_container_in_order(tmp_path, scaler_dir, xgboost_model_dir):
    plan, stage = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    assert plan.kind == PIPELINE_KIND
    assert plan.images == [SKLEARN_IMAGE, XGB_IMAGE]
    assert stage.staged == ["s3://b/scaler.tar.gz", "s3://b/xgb.tar.gz"]
    spec = json.loads((plan.model_dir / PIPELINE_FILE).read_text())
    assert spec["mode"] == "Serial"
    assert [(c["hostname"], c["kind"], c["model_dir"]) for c in spec["containers"]] == [
        ("container-1", "sklearn", str(scaler_dir)), ("container-2", "builtin-xgboost", str(xgboost_model_dir))]
    assert spec["containers"][0]["env"]["SAGEMAKER_PROGRAM"] == "inference.py"


def test_plan_pipeline_same_model_reuses_directory(tmp_path, scaler_dir, xgboost_model_dir):
    first, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    second, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    direct, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir, mode="Direct", hostnames=("pre", "xgb"))
    assert first.model_dir == second.model_dir
    assert direct.model_dir != first.model_dir
    assert json.loads((direct.model_dir / PIPELINE_FILE).read_text())["mode"] == "Direct"


def test_plan_single_container_stays_single(tmp_path, xgboost_model_dir):
    stage = _stage_from({"s3://b/xgb.tar.gz": xgboost_model_dir})
    plan = plan_model_server({"PrimaryContainer": {"Image": XGB_IMAGE, "ModelDataUrl": "s3://b/xgb.tar.gz"}},
                             stage, tmp_path / "plans")
    assert (plan.kind, plan.model_dir, plan.images) == ("builtin-xgboost", xgboost_model_dir, [XGB_IMAGE])


# ------------------------------------------------------------------------------------------ the server
def _expected(xgb_dir: Path, rows: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    from opensage.algorithms.xgboost import load_booster

    return load_booster(xgb_dir / "xgboost-model").predict(xgb.DMatrix((rows * 0.5).astype(np.float32)))


def _child_pids(server) -> list[int]:
    return [int(p) for p in re.findall(r"pid (\d+), port", server.stderr())]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_pipeline_serial_feeds_each_container_the_previous_answer(start_server, tmp_path, scaler_dir,
                                                                   xgboost_model_dir, breast_cancer):
    features, _ = breast_cancer
    plan, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    server = start_server(plan.model_dir, PIPELINE_KIND)
    response = server.post(csv_rows(features[:4]), "text/csv", "text/csv")
    assert response.status_code == 200, response.text
    np.testing.assert_allclose([float(v) for v in response.text.split()], _expected(xgboost_model_dir, features[:4]),
                               rtol=1e-5)
    # The client's Accept reaches the last container only: the scaler still hands CSV to XGBoost.
    as_json = server.post(csv_rows(features[:4]), "text/csv", "application/json")
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    scores = [p["score"] for p in as_json.json()["predictions"]]
    np.testing.assert_allclose(scores, _expected(xgboost_model_dir, features[:4]), rtol=1e-5)


def test_pipeline_container_error_is_returned_as_is(start_server, tmp_path, scaler_dir, xgboost_model_dir):
    plan, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    server = start_server(plan.model_dir, PIPELINE_KIND)
    response = server.post(b"\x00\x01", "application/x-unknown", "text/csv")
    assert 400 <= response.status_code < 600
    assert "x-opensage-error-type" not in response.headers


def test_pipeline_target_container_hostname_on_serial_is_validation_error(start_server, tmp_path, scaler_dir,
                                                                           xgboost_model_dir, breast_cancer):
    plan, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    server = start_server(plan.model_dir, PIPELINE_KIND)
    response = server.post(csv_rows(breast_cancer[0][:1]), "text/csv", "text/csv",
                           **{"X-Amzn-SageMaker-Target-Container-Hostname": "container-2"})
    assert response.status_code == 400
    assert response.headers["x-opensage-error-type"] == "ValidationError"
    assert "direct invocation" in response.text


def test_pipeline_direct_invokes_only_the_named_container(start_server, tmp_path, scaler_dir, xgboost_model_dir,
                                                          breast_cancer):
    import xgboost as xgb

    from opensage.algorithms.xgboost import load_booster

    features, _ = breast_cancer
    plan, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir, mode="Direct", hostnames=("pre", "xgb"))
    server = start_server(plan.model_dir, PIPELINE_KIND)
    direct = server.post(csv_rows(features[:3]), "text/csv", "text/csv",
                         **{"X-Amzn-SageMaker-Target-Container-Hostname": "xgb"})
    assert direct.status_code == 200, direct.text
    expected = load_booster(xgboost_model_dir / "xgboost-model").predict(xgb.DMatrix(features[:3].astype(np.float32)))
    np.testing.assert_allclose([float(v) for v in direct.text.split()], expected, rtol=1e-5)
    for headers, wording in (({}, "set TargetContainerHostname"),
                             ({"X-Amzn-SageMaker-Target-Container-Hostname": "nope"}, "does not exist")):
        response = server.post(csv_rows(features[:1]), "text/csv", "text/csv", **headers)
        assert response.status_code == 400
        assert response.headers["x-opensage-error-type"] == "ValidationError"
        assert wording in response.text


def test_pipeline_child_death_stops_front_with_error(start_server, tmp_path, scaler_dir, xgboost_model_dir):
    plan, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    server = start_server(plan.model_dir, PIPELINE_KIND)
    children = _child_pids(server)
    assert len(children) == 2
    os.kill(children[1], signal.SIGKILL)
    assert server.proc.wait(timeout=40) == 1
    assert _wait_until(lambda: all(_gone(p) for p in children)), server.stderr()
    assert "container container-2 exited" in server.stderr()


def test_pipeline_sigterm_stops_children(start_server, tmp_path, scaler_dir, xgboost_model_dir):
    plan, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    server = start_server(plan.model_dir, PIPELINE_KIND)
    children = _child_pids(server)
    assert server.stop(timeout=40) == 0
    assert _wait_until(lambda: all(_gone(p) for p in children)), server.stderr()


def test_pipeline_front_killed_children_die_too(start_server, tmp_path, scaler_dir, xgboost_model_dir):
    plan, _ = _plan(tmp_path, scaler_dir, xgboost_model_dir)
    server = start_server(plan.model_dir, PIPELINE_KIND)
    children = _child_pids(server)
    server.proc.kill()
    server.proc.wait()
    assert _wait_until(lambda: all(_gone(p) for p in children)), server.stderr()
