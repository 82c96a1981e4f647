"""The staged-model cache (<home>/models) on `opensage up`: a user re-training to one output path and updating the
endpoint leaves only the directories something still serves; deleting the endpoint frees its model's."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import ROLE, start_platform, stop_platform
from tests.e2e.test_durability import _session

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def _model_tar_gz(tmp_path: Path, flip: bool) -> bytes:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = (X[:, 0] > 0).astype(float)
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(X, label=1 - y if flip else y), 5)
    path = tmp_path / "xgboost-model.ubj"
    booster.save_model(str(path))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname="xgboost-model")
    return buf.getvalue()


def _staged(home: Path) -> list[Path]:
    root = home / "models"
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def _deploy(sm, s3, bucket: str, name: str, body: bytes) -> str:
    """Upload the model to the one output path this user trains to, then a model and an endpoint config."""
    s3.put_object(Bucket=bucket, Key="churn/output/model.tar.gz", Body=body)
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": XGBOOST_IMAGE,
                                      "ModelDataUrl": f"s3://{bucket}/churn/output/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    return name


def _wait_in_service(sm, endpoint: str) -> None:
    sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig={"Delay": 1, "MaxAttempts": 120})


def _predict(runtime, endpoint: str) -> float:
    body = runtime.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=b"2.0,0,0")["Body"].read()
    return float(body.decode().strip())


def _until(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition never held"
        time.sleep(0.5)


def test_retrained_model_update_endpoint_then_delete_frees_unused_model_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENSAGE_MODEL_CACHE_IDLE_SECONDS", "2")
    home = tmp_path / "home"
    p = start_platform(home)
    try:
        session = _session(p)
        sm, s3, runtime = session.client("sagemaker"), session.client("s3"), session.client("sagemaker-runtime")
        bucket = "model-cache-e2e"
        s3.create_bucket(Bucket=bucket)
        first = _deploy(sm, s3, bucket, "churn-v1", _model_tar_gz(tmp_path, flip=False))
        sm.create_endpoint(EndpointName="churn", EndpointConfigName=first)
        _wait_in_service(sm, "churn")
        assert _predict(runtime, "churn") > 0.5
        [v1_dir] = _staged(home)

        second = _deploy(sm, s3, bucket, "churn-v2", _model_tar_gz(tmp_path, flip=True))  # same S3 key
        sm.update_endpoint(EndpointName="churn", EndpointConfigName=second)
        _until(lambda: sm.describe_endpoint(EndpointName="churn")["EndpointConfigName"] == second
               and sm.describe_endpoint(EndpointName="churn")["EndpointStatus"] == "InService")
        assert _predict(runtime, "churn") < 0.5
        # The old version's directory goes once no fleet names it and it was idle; the served one stays.
        _until(lambda: v1_dir not in _staged(home))
        [v2_dir] = _staged(home)
        assert (v2_dir / "xgboost-model").is_file()
        time.sleep(3)  # well past the idle time: still served, still there
        assert _staged(home) == [v2_dir] and _predict(runtime, "churn") < 0.5

        sm.delete_endpoint(EndpointName="churn")
        _until(lambda: _staged(home) == [])
        assert not (home / "models" / f"{v2_dir.name}.source.json").exists()
        assert "removed 1 unused staged model directory" in p.log.read_text()

        # A multi-model endpoint's cache of TargetModels goes with the last endpoint serving its prefix.
        s3.put_object(Bucket=bucket, Key="per-customer/customer-7.tar.gz", Body=_model_tar_gz(tmp_path, flip=False))
        sm.create_model(ModelName="per-customer", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGBOOST_IMAGE, "Mode": "MultiModel", "ModelDataUrl": f"s3://{bucket}/per-customer/"})
        sm.create_endpoint_config(EndpointConfigName="per-customer", ProductionVariants=[{
            "VariantName": "AllTraffic", "ModelName": "per-customer", "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large"}])
        sm.create_endpoint(EndpointName="per-customer", EndpointConfigName="per-customer")
        _wait_in_service(sm, "per-customer")
        answer = runtime.invoke_endpoint(EndpointName="per-customer", ContentType="text/csv", Body=b"2.0,0,0",
                                         TargetModel="customer-7.tar.gz")["Body"].read()
        assert float(answer.decode().strip()) > 0.5
        [cache] = list((home / "plans" / "multi-model").iterdir())
        assert [d for d in cache.iterdir() if d.is_dir()]  # customer-7's model, staged there
        time.sleep(3)  # idle, but its endpoint still serves it
        assert cache.is_dir()
        sm.delete_endpoint(EndpointName="per-customer")
        _until(lambda: not cache.exists())
    finally:
        stop_platform(p)
