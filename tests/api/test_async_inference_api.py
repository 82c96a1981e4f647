"""InvokeEndpointAsync through boto3: a real XGBoost model server behind the in-process control plane."""

from __future__ import annotations

import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, XGB_IMAGE, start_server
from tests.modelfiles import breast_cancer_xgb

pytestmark = pytest.mark.slow

BUCKET = "bucket1"
ASYNC_CONFIG = {"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/async-out/",
                                 "S3FailurePath": f"s3://{BUCKET}/async-fail"},
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)


def _deploy(server, endpoint: str, async_config: dict | None) -> None:
    sm = server.client("sagemaker")
    config = {"EndpointConfigName": f"{endpoint}-cfg", "ProductionVariants": [
        {"VariantName": "AllTraffic", "ModelName": "async-model", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}]}
    if async_config:
        config["AsyncInferenceConfig"] = async_config
    sm.create_endpoint_config(**config)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-cfg")
    deadline = time.time() + 90
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=endpoint)
        if d["EndpointStatus"] != "Creating":
            assert d["EndpointStatus"] == "InService", d.get("FailureReason")
            return
        time.sleep(0.2)
    raise AssertionError(f"endpoint {endpoint} still Creating")


def _create_model(server) -> np.ndarray:
    store = server.store()
    store.ensure_bucket(BUCKET)
    blob, rows, _, _ = breast_cancer_xgb(5)
    store.put_bytes(BUCKET, "models/async/model.tar.gz", blob)
    server.client("sagemaker").create_model(ModelName="async-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/async/model.tar.gz"})
    return rows


@pytest.fixture(scope="module")
def rows(server) -> np.ndarray:
    rows = _create_model(server)
    _deploy(server, "async-ep", ASYNC_CONFIG)
    return rows


def _wait_object(server, uri: str, timeout: float = 30) -> bytes:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    store = server.store()
    deadline = time.time() + timeout
    while time.time() < deadline:
        if store.exists(bucket, key):
            return store.get_bytes(bucket, key)
        time.sleep(0.1)
    raise AssertionError(f"{uri} never appeared")


def test_invoke_endpoint_async_returns_202_and_output_matches_sync_invoke(server, rows):
    rt = server.client("sagemaker-runtime")
    server.store().put_bytes(BUCKET, "async-in/req1.csv", _csv(rows[:5]).encode())
    r = rt.invoke_endpoint_async(EndpointName="async-ep", InputLocation=f"s3://{BUCKET}/async-in/req1.csv",
                                 ContentType="text/csv")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    inference_id = r["InferenceId"]
    assert r["OutputLocation"] == f"s3://{BUCKET}/async-out/{inference_id}.out"
    assert r["FailureLocation"] == f"s3://{BUCKET}/async-fail/{inference_id}-error.out"
    got = _wait_object(server, r["OutputLocation"]).decode().split()
    sync = rt.invoke_endpoint(EndpointName="async-ep", ContentType="text/csv", Body=_csv(rows[:5]))
    assert got == sync["Body"].read().decode().split() and len(got) == 5


def test_invoke_endpoint_async_keeps_given_inference_id_and_accepts_inline_body(server, rows):
    rt = server.client("sagemaker-runtime")
    r = rt.invoke_endpoint_async(EndpointName="async-ep", InferenceId="my-id-1", Body=_csv(rows[:2]).encode(),
                                 ContentType="text/csv")
    assert r["InferenceId"] == "my-id-1"
    assert r["OutputLocation"] == f"s3://{BUCKET}/async-out/my-id-1.out"
    assert len(_wait_object(server, r["OutputLocation"]).decode().split()) == 2


def test_invoke_endpoint_async_model_error_writes_failure_object(server, rows):
    rt = server.client("sagemaker-runtime")
    server.store().put_bytes(BUCKET, "async-in/bad.csv", b"not,a,number\n")
    r = rt.invoke_endpoint_async(EndpointName="async-ep", InputLocation=f"s3://{BUCKET}/async-in/bad.csv",
                                 ContentType="text/csv")
    failure = _wait_object(server, r["FailureLocation"]).decode()
    assert "Received client error (400) from primary" in failure
    assert not server.store().exists(BUCKET, r["OutputLocation"].split(f"{BUCKET}/", 1)[1])


def test_invoke_endpoint_async_missing_input_object_fails_later(server, rows):
    rt = server.client("sagemaker-runtime")
    r = rt.invoke_endpoint_async(EndpointName="async-ep", InputLocation=f"s3://{BUCKET}/async-in/absent.csv",
                                 ContentType="text/csv")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert "async-in/absent.csv" in _wait_object(server, r["FailureLocation"]).decode()


def test_invoke_endpoint_async_on_realtime_endpoint_is_validation_error(server, rows):
    _deploy(server, "sync-only-ep", None)
    rt = server.client("sagemaker-runtime")
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint_async(EndpointName="sync-only-ep", InputLocation=f"s3://{BUCKET}/async-in/req1.csv")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert "AsyncInferenceConfig" in str(e.value)


def test_invoke_endpoint_async_missing_endpoint_is_validation_error(server):
    rt = server.client("sagemaker-runtime")
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint_async(EndpointName="nope", InputLocation=f"s3://{BUCKET}/x.csv")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint nope of account" in str(e.value)


def test_invoke_endpoint_async_ttl_out_of_range_is_validation_error(server, rows):
    rt = server.client("sagemaker-runtime")
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint_async(EndpointName="async-ep", InputLocation=f"s3://{BUCKET}/x.csv", RequestTTLSeconds=30000)
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert "'requestTTLSeconds'" in str(e.value) and "21600" in str(e.value)


def test_invoke_endpoint_async_queue_survives_a_restart(tmp_path):
    home = tmp_path / "home"
    first = start_server(home)
    server = next(first)
    try:
        rows = _create_model(server)
        _deploy(server, "restart-ep", {"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/restart-out"}})
        server.platform.async_inference.shutdown()  # the queue keeps requests; nothing runs them now
        server.store().put_bytes(BUCKET, "restart-in/r.csv", _csv(rows[:3]).encode())
        r = server.client("sagemaker-runtime").invoke_endpoint_async(
            EndpointName="restart-ep", InputLocation=f"s3://{BUCKET}/restart-in/r.csv", ContentType="text/csv")
        assert "FailureLocation" not in r
        assert server.platform.async_inference.backlog("restart-ep") == 1
    finally:
        next(first, None)  # the control plane goes down with the request still queued
    second = start_server(home)
    server = next(second)
    try:
        try:
            out = _wait_object(server, r["OutputLocation"], timeout=60)
        except AssertionError as e:  # say what became of the request, not only that its output is missing
            rows = server.platform.deps.resources.in_status(
                "async-invocation", ("Pending", "InProgress", "Completed", "Failed"))
            raise AssertionError(f"{e}; queued requests: {[(x.status, x.state) for x in rows]}") from None
        assert len(out.decode().split()) == 3
    finally:
        next(second, None)

