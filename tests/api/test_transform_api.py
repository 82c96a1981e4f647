"""Batch transform through boto3: real workers and model servers behind the in-process control plane."""

from __future__ import annotations

import json
import textwrap
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import breast_cancer_xgb, tar_gz

pytestmark = pytest.mark.slow

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
INFERENCE = textwrap.dedent('''
    import json, time

    def model_fn(model_dir):
        return {"w": 2.0}

    def input_fn(body, content_type):
        text = body.decode() if isinstance(body, bytes) else body
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def predict_fn(data, model):
        out = []
        for x in data:
            if isinstance(x, dict) and "sleep" in x:
                time.sleep(x["sleep"])
                x = [0]
            if not isinstance(x, list):
                raise ValueError("features must be a list")
            out.append(model["w"] * sum(x))
        return out

    def output_fn(prediction, accept):
        return "".join(json.dumps(p) + "\\n" for p in prediction), "application/jsonlines"
''')


@pytest.fixture(scope="module")
def xgb(server):
    """A trained built-in XGBoost model ("tx-xgb"), its booster and the rows it was trained on."""
    blob, X, _, booster = breast_cancer_xgb(5)
    store = server.store()
    store.ensure_bucket("tbucket")
    store.put_bytes("tbucket", "models/xgb/model.tar.gz", blob)
    server.client("sagemaker").create_model(ModelName="tx-xgb", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://tbucket/models/xgb/model.tar.gz"})
    return booster, X


@pytest.fixture(scope="module")
def script_model(server):
    store = server.store()
    store.ensure_bucket("tbucket")
    store.put_bytes("tbucket", "models/script/model.tar.gz", tar_gz({"code/inference.py": INFERENCE.encode()}))
    server.client("sagemaker").create_model(ModelName="tx-script", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://tbucket/models/script/model.tar.gz"})
    return "tx-script"


def _csv(rows: np.ndarray) -> bytes:
    return ("\n".join(",".join(f"{v:.6g}" for v in row) for row in rows) + "\n").encode()


def _job(name: str, model: str, prefix: str, **kw) -> dict:
    req = {
        "TransformJobName": name, "ModelName": model,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                           "S3Uri": f"s3://tbucket/{prefix}"}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": f"s3://tbucket/out/{name}", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    for key, value in kw.items():
        if isinstance(value, dict) and isinstance(req.get(key), dict):
            req[key] = {**req[key], **value}
        else:
            req[key] = value
    return req


def _wait(sm, name: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_transform_job(TransformJobName=name)
        if d["TransformJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"transform job {name} still {d['TransformJobStatus']}")


def test_transform_csv_multirecord_keeps_order_across_batches_and_files(server, xgb):
    booster, X = xgb
    import xgboost

    big = np.tile(X, (25, 1))  # ~2.5 MB of CSV: several 1 MB requests
    store, sm = server.store(), server.client("sagemaker")
    store.put_bytes("tbucket", "in/multi/a.csv", _csv(big))
    store.put_bytes("tbucket", "in/multi/sub/b.csv", _csv(X[:7]))
    sm.create_transform_job(**_job("tx-multi", "tx-xgb", "in/multi/", BatchStrategy="MultiRecord",
                                   MaxPayloadInMB=1, MaxConcurrentTransforms=3,
                                   TransformResources={"InstanceCount": 2}))
    d = _wait(sm, "tx-multi")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TransformEndTime"] >= d["TransformStartTime"]
    expected = booster.predict(xgboost.DMatrix(np.asarray(big, dtype=np.float32)))
    got = np.array([float(v) for v in store.get_bytes("tbucket", "out/tx-multi/a.csv.out").decode().split("\n")
                    if v])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    small = store.get_bytes("tbucket", "out/tx-multi/sub/b.csv.out").decode().splitlines()
    assert len(small) == 7


def test_transform_single_record_one_request_per_line(server, xgb):
    _, X = xgb
    store, sm = server.store(), server.client("sagemaker")
    store.put_bytes("tbucket", "in/single/data.csv", _csv(X[:12]))
    sm.create_transform_job(**_job("tx-single", "tx-xgb", "in/single/data.csv", BatchStrategy="SingleRecord"))
    d = _wait(sm, "tx-single")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    lines = store.get_bytes("tbucket", "out/tx-single/data.csv.out").decode().splitlines()
    assert len(lines) == 12 and all(0 <= float(v) <= 1 for v in lines)
    streams = server.client("logs").describe_log_streams(
        logGroupName="/aws/sagemaker/TransformJobs", logStreamNamePrefix="tx-single/")["logStreams"]
    assert any(s["logStreamName"].endswith("/data-log") for s in streams)


def test_transform_csv_join_source_and_filters(server, xgb):
    _, X = xgb
    store, sm = server.store(), server.client("sagemaker")
    rows = "".join(f"id{i}," + ",".join(f"{v:.6g}" for v in X[i]) + "\n" for i in range(5))
    store.put_bytes("tbucket", "in/join/data.csv", rows.encode())
    sm.create_transform_job(**_job("tx-join", "tx-xgb", "in/join/", DataProcessing={
        "InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}))
    d = _wait(sm, "tx-join")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    out = store.get_bytes("tbucket", "out/tx-join/data.csv.out").decode().splitlines()
    assert [line.split(",")[0] for line in out] == [f"id{i}" for i in range(5)]
    assert all(0 <= float(line.split(",")[1]) <= 1 for line in out)


def test_transform_jsonlines_input_filter_join_output_filter(server, script_model):
    store, sm = server.store(), server.client("sagemaker")
    records = [{"id": i, "features": [i, 1]} for i in range(6)]
    store.put_bytes("tbucket", "in/jsonl/recs.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    sm.create_transform_job(**_job(
        "tx-jsonl", script_model, "in/jsonl/", BatchStrategy="MultiRecord",
        TransformInput={"ContentType": "application/jsonlines"},
        TransformOutput={"Accept": "application/jsonlines"},
        DataProcessing={"InputFilter": "$.features", "JoinSource": "Input",
                        "OutputFilter": "$['id','SageMakerOutput']"}))
    d = _wait(sm, "tx-jsonl")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    out = [json.loads(x) for x in store.get_bytes("tbucket", "out/tx-jsonl/recs.jsonl.out").decode().splitlines()]
    assert out == [{"id": i, "SageMakerOutput": 2.0 * (i + 1)} for i in range(6)]


def test_transform_bad_line_fails_with_file_and_line(server, xgb):
    _, X = xgb
    store, sm = server.store(), server.client("sagemaker")
    lines = _csv(X[:30]).decode().splitlines()
    lines[16] = "abc," + lines[16].split(",", 1)[1]
    store.put_bytes("tbucket", "in/bad/data.csv", ("\n".join(lines) + "\n").encode())
    sm.create_transform_job(**_job("tx-bad", "tx-xgb", "in/bad/", BatchStrategy="MultiRecord"))
    d = _wait(sm, "tx-bad")
    assert d["TransformJobStatus"] == "Failed"
    assert d["FailureReason"].startswith("Bad input in data.csv line 17: model returned 400"), d["FailureReason"]
    assert not store.exists("tbucket", "out/tx-bad/data.csv.out")


def test_stop_transform_job_stops(server, script_model):
    store, sm = server.store(), server.client("sagemaker")
    store.put_bytes("tbucket", "in/slow/s.jsonl", b"".join(b'{"sleep": 0.5}\n' for _ in range(200)))
    sm.create_transform_job(**_job("tx-stop", script_model, "in/slow/", BatchStrategy="SingleRecord",
                                   TransformInput={"ContentType": "application/jsonlines"}))
    deadline = time.time() + 30
    while time.time() < deadline and not list(server.settings.jobs_dir.glob("tx-stop/*/logs/data-log.log")):
        time.sleep(0.2)
    time.sleep(1.0)
    sm.stop_transform_job(TransformJobName="tx-stop")
    assert sm.describe_transform_job(TransformJobName="tx-stop")["TransformJobStatus"] in ("Stopping", "Stopped")
    d = _wait(sm, "tx-stop", timeout=40)
    assert d["TransformJobStatus"] == "Stopped"
    with pytest.raises(ClientError) as e:
        sm.stop_transform_job(TransformJobName="tx-stop")
    assert e.value.response["Error"]["Code"] == "ValidationException"


def test_create_transform_job_missing_model_is_could_not_find(server, xgb):
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.create_transform_job(**_job("tx-nomodel", "no-such-model", "in/single/"))
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "Could not find model" in str(e.value)


def test_create_transform_job_empty_input_prefix_is_refused(server, xgb):
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.create_transform_job(**_job("tx-noinput", "tx-xgb", "in/nothing-here/"))
    assert "No S3 objects found under S3 URL" in str(e.value)


def test_describe_missing_and_duplicate_and_list(server, xgb):
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.describe_transform_job(TransformJobName="tx-missing")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "Could not find requested job with name tx-missing" in str(e.value)
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.stop_transform_job(TransformJobName="tx-missing")
    server.store().put_bytes("tbucket", "in/dup/d.csv", b"1,2\n")
    sm.create_transform_job(**_job("tx-dup", "tx-xgb", "in/dup/"))
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.create_transform_job(**_job("tx-dup", "tx-xgb", "in/dup/"))
    names = [s["TransformJobName"] for s in sm.list_transform_jobs(NameContains="tx-dup")["TransformJobSummaries"]]
    assert names == ["tx-dup"]
    _wait(sm, "tx-dup")


def test_create_transform_job_bad_data_processing_is_refused(server, xgb):
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.create_transform_job(**_job("tx-badpath", "tx-xgb", "in/single/",
                                       DataProcessing={"InputFilter": "$.features"}))
    assert "CSV input allows index paths only" in str(e.value)


def test_killed_worker_fails_job_and_stops_its_model_server(server, script_model):
    import os
    import signal

    from opensage.serving.replicas import _alive

    store, sm = server.store(), server.client("sagemaker")
    store.put_bytes("tbucket", "in/killed/s.jsonl", b"".join(b'{"sleep": 0.5}\n' for _ in range(200)))
    sm.create_transform_job(**_job("tx-killed", script_model, "in/killed/", BatchStrategy="SingleRecord",
                                   TransformInput={"ContentType": "application/jsonlines"}))
    deadline = time.time() + 30
    server_files: list = []
    while time.time() < deadline and not server_files:
        server_files = list(server.settings.jobs_dir.glob("tx-killed/*/model_server.json"))
        time.sleep(0.2)
    assert server_files
    jobdir = server_files[0].parent
    model_server_pid = json.loads(server_files[0].read_text())["pid"]
    os.killpg(int((jobdir / "agent.pid").read_text()), signal.SIGKILL)
    d = _wait(sm, "tx-killed", timeout=30)
    assert d["TransformJobStatus"] == "Failed"
    assert "ended without reporting a result" in d["FailureReason"]
    deadline = time.time() + 10
    while time.time() < deadline and _alive(model_server_pid):
        time.sleep(0.1)
    assert not _alive(model_server_pid)
