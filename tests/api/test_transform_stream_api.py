"""Batch transform reads its input as a stream: gzip objects and multi-request objects end to end."""

from __future__ import annotations

import gzip
import time

import numpy as np
import pytest

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import train_xgb, xgb_model_tar

pytestmark = pytest.mark.slow


def _model(server, name: str) -> tuple[object, np.ndarray]:
    rng = np.random.default_rng(7)
    X = np.round(rng.normal(size=(400, 8)), 4).astype(np.float32)
    booster = train_xgb(X, (X[:, 0] > 0).astype(np.float32), 5)
    store = server.store()
    store.ensure_bucket("sbucket")
    store.put_bytes("sbucket", f"models/{name}/model.tar.gz", xgb_model_tar(booster))
    server.client("sagemaker").create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": f"s3://sbucket/models/{name}/model.tar.gz"})
    return booster, X


def _wait(sm, name: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_transform_job(TransformJobName=name)
        if d["TransformJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"transform job {name} did not finish in {timeout} s")


def _request(name: str, model: str, key: str, **kw) -> dict:
    return {
        "TransformJobName": name, "ModelName": model,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://sbucket/{key}"}},
                           "ContentType": "text/csv", "SplitType": "Line", **kw.pop("TransformInput", {})},
        "TransformOutput": {"S3OutputPath": f"s3://sbucket/out/{name}", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        **kw,
    }


def test_transform_gzip_multi_member_object_many_requests_matches_predict(server):
    import xgboost as xgb

    booster, X = _model(server, "ts-xgb")
    rows = np.tile(X, (700, 1))  # ~1.5 MB of CSV: two 1 MB requests
    text = "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in rows).encode()
    store, sm = server.store(), server.client("sagemaker")
    half = len(text) // 2
    store.put_bytes("sbucket", "in/gz/data.csv.gz", gzip.compress(text[:half]) + gzip.compress(text[half:]))
    sm.create_transform_job(**_request("ts-gzip", "ts-xgb", "in/gz/", TransformInput={"CompressionType": "Gzip"},
                                       BatchStrategy="MultiRecord", MaxPayloadInMB=1))
    d = _wait(sm, "ts-gzip")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    got = np.array(store.get_bytes("sbucket", "out/ts-gzip/data.csv.gz.out").split(), dtype=np.float32)
    expected = booster.predict(xgb.DMatrix(rows))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_transform_gzip_input_not_gzip_fails_naming_object_and_parameter(server):
    _model(server, "ts-xgb2")
    store, sm = server.store(), server.client("sagemaker")
    store.put_bytes("sbucket", "in/notgz/data.csv", b"1,2,3,4,5,6,7,8\n")
    sm.create_transform_job(**_request("ts-notgz", "ts-xgb2", "in/notgz/",
                                       TransformInput={"CompressionType": "Gzip"}))
    d = _wait(sm, "ts-notgz")
    assert d["TransformJobStatus"] == "Failed"
    assert "s3://sbucket/in/notgz/data.csv is not gzip data" in d["FailureReason"]
    assert "CompressionType" in d["FailureReason"]
