"""Issue 8 item 5: SageMaker accepts S3 locations as https:// object URLs (botocore's S3Uri / Url patterns are
``(https|s3)://...``); path-style and virtual-hosted URLs name the platform's bucket and key."""

from __future__ import annotations

import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import breast_cancer_xgb

pytestmark = pytest.mark.slow

BUCKET = "https-models"
PATH_STYLE = f"https://s3-us-east-1.amazonaws.com/{BUCKET}/xgb/model.tar.gz"
VIRTUAL_HOSTED = f"https://{BUCKET}.s3.us-east-1.amazonaws.com/xgb/model.tar.gz"


@pytest.fixture(scope="module")
def rows(server) -> np.ndarray:
    store = server.store()
    store.ensure_bucket(BUCKET)
    blob, X, _, _ = breast_cancer_xgb(5)
    store.put_bytes(BUCKET, "xgb/model.tar.gz", blob)
    return X


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)


def _wait(sm, name: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] not in ("Creating", "Updating"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"endpoint {name} still {d['EndpointStatus']}")


def test_create_model_https_model_data_url_path_style_and_virtual_hosted_endpoint_serves(server, rows):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    for name, url in (("https-path-style", PATH_STYLE), ("https-virtual-hosted", VIRTUAL_HOSTED)):
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": XGB_IMAGE, "ModelDataUrl": url})
        assert sm.describe_model(ModelName=name)["PrimaryContainer"]["ModelDataUrl"] == url  # echoed as sent
    sm.create_endpoint_config(EndpointConfigName="https-cfg", ProductionVariants=[
        {"VariantName": v, "ModelName": m, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": 1.0}
        for v, m in (("PathStyle", "https-path-style"), ("VirtualHosted", "https-virtual-hosted"))])
    sm.create_endpoint(EndpointName="https-ep", EndpointConfigName="https-cfg")
    d = _wait(sm, "https-ep")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    for variant in ("PathStyle", "VirtualHosted"):
        r = rt.invoke_endpoint(EndpointName="https-ep", ContentType="text/csv", Body=_csv(rows[:3]),
                               TargetVariant=variant)
        scores = r["Body"].read().decode().strip().splitlines()
        assert r["InvokedProductionVariant"] == variant
        assert len(scores) == 3 and all(0 <= float(s) <= 1 for s in scores)
    sm.delete_endpoint(EndpointName="https-ep")


def test_create_model_https_url_of_another_host_is_validation_exception(server):
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.create_model(ModelName="https-elsewhere", ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGB_IMAGE, "ModelDataUrl": "https://example.com/models/model.tar.gz"})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "primaryContainer.modelDataUrl" in str(e.value)


def test_create_training_job_https_channel_and_output_trains_and_writes_model(server, rows):
    from sklearn.datasets import load_breast_cancer

    from tests.conftest import training_request, wait_for_status

    X, y = load_breast_cancer(return_X_y=True)
    train = "\n".join(",".join([str(int(label))] + [f"{v:.6g}" for v in row]) for label, row in zip(y, X, strict=True))
    server.store().put_bytes(BUCKET, "data/train/train.csv", train.encode())
    sm = server.client("sagemaker")
    req = training_request("https-train", bucket=BUCKET)
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = \
        f"https://{BUCKET}.s3.amazonaws.com/data/train"
    req["OutputDataConfig"]["S3OutputPath"] = f"https://s3.us-east-1.amazonaws.com/{BUCKET}/https-out"
    sm.create_training_job(**req)
    d = wait_for_status(sm, "https-train")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert server.store().exists(BUCKET, "https-out/https-train/output/model.tar.gz")


def test_create_transform_job_https_input_and_output_writes_predictions(server, rows):
    sm = server.client("sagemaker")
    server.store().put_bytes(BUCKET, "batch/in.csv", _csv(rows[:4]).encode())
    sm.create_model(ModelName="https-transform-model", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": XGB_IMAGE, "ModelDataUrl": VIRTUAL_HOSTED})
    sm.create_transform_job(
        TransformJobName="https-transform", ModelName="https-transform-model",
        TransformInput={"DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"https://s3-us-east-1.amazonaws.com/{BUCKET}/batch/"}},
            "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": f"https://{BUCKET}.s3.us-east-1.amazonaws.com/batch-out",
                         "AssembleWith": "Line"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    deadline = time.time() + 90
    while (d := sm.describe_transform_job(TransformJobName="https-transform"))["TransformJobStatus"] == "InProgress":
        assert time.time() < deadline, "transform job still InProgress"
        time.sleep(0.2)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    out = server.store().get_bytes(BUCKET, "batch-out/in.csv.out").decode().split()
    assert len(out) == 4 and all(0 <= float(s) <= 1 for s in out)
