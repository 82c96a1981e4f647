"""Built-in XGBoost per image version through boto3 (in-process control plane, real model servers and jobs).

The image tag picks the container version (``OPENSAGE_IMAGE_VERSION`` in the job / replica environment):
hyperparameters it accepts, the model file it writes, its real-time CSV body and whether /ping loads the model.
Versions 0.90-x need an xgboost 0.90 environment (built with uv on first use) and are covered by
tests/algorithms/test_xgboost_090_environment.py; 1.0-1, 1.2-1 and 1.7-1 run on the platform's xgboost here.
"""

from __future__ import annotations

import datetime as dt
import io
import pickle
import tarfile
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, training_request, wait_for_status
from tests.modelfiles import breast_cancer_xgb, tar_gz

pytestmark = pytest.mark.slow

ECR = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"


@pytest.fixture(scope="module")
def data(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    rng = np.random.default_rng(3)
    X = rng.random((200, 4))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    csv = "\n".join(",".join([str(a)] + [f"{v:.4f}" for v in row]) for a, row in zip(y, X, strict=True))
    store.put_bytes("bucket1", "data/train/part-1.csv", csv.encode())
    blob, rows, _, _ = breast_cancer_xgb(5)
    store.put_bytes("bucket1", "vmodels/good/model.tar.gz", blob)
    store.put_bytes("bucket1", "vmodels/broken/model.tar.gz", tar_gz({"xgboost-model": b"not a model"}))
    return rows


def _deploy(sm, name: str, image: str, model_key: str) -> dict:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": image, "ModelDataUrl": f"s3://bucket1/vmodels/{model_key}/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    deadline = time.time() + 120
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] not in ("Creating", "Updating"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"endpoint {name} still {d['EndpointStatus']}")


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)


def test_invoke_endpoint_xgboost_10_csv_comma_joined_without_newline(server, data):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    d = _deploy(sm, "xgb-v10", f"{ECR}:1.0-1-cpu-py3", "good")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    r = rt.invoke_endpoint(EndpointName="xgb-v10", ContentType="text/csv", Accept="application/json",
                           Body=_csv(data[:3]))
    body = r["Body"].read().decode()
    assert r["ContentType"].startswith("text/csv")  # Accept is ignored up to 1.2-1
    assert "\n" not in body and len(body.split(",")) == 3


def test_invoke_endpoint_xgboost_17_csv_one_value_per_line(server, data):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    d = _deploy(sm, "xgb-v17", f"{ECR}:1.7-1", "good")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    body = rt.invoke_endpoint(EndpointName="xgb-v17", ContentType="text/csv", Body=_csv(data[:3]))["Body"].read()
    assert body.decode().endswith("\n") and len(body.decode().splitlines()) == 3


def test_create_endpoint_xgboost_12_1_broken_model_in_service_invocations_model_error_500(server, data):
    """1.2-1 loads the model lazily: /ping passes, each invocation is a 500 (ModelError), counted as
    Invocation5XXErrors - what an AutoRollbackConfiguration alarm watches."""
    sm, rt, cw = server.client("sagemaker"), server.client("sagemaker-runtime"), server.client("cloudwatch")
    d = _deploy(sm, "xgb-v121-broken", f"{ECR}:1.2-1", "broken")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            rt.invoke_endpoint(EndpointName="xgb-v121-broken", ContentType="text/csv", Body=_csv(data[:1]))
        err = e.value.response
        assert err["Error"]["Code"] == "ModelError" and err["OriginalStatusCode"] == 500
        assert "Unable to load model" in err["Error"]["Message"] or "Unable to load model" in err.get(
            "OriginalMessage", "")
    now = dt.datetime.now(dt.UTC)
    points = cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors", Period=60, Statistics=["Sum"],
        Dimensions=[{"Name": "EndpointName", "Value": "xgb-v121-broken"}, {"Name": "VariantName", "Value": "AllTraffic"}],
        StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=1))["Datapoints"]
    assert sum(p["Sum"] for p in points) == 2


def test_create_endpoint_xgboost_17_broken_model_fails_ping_health_check(server, data):
    d = _deploy(server.client("sagemaker"), "xgb-v17-broken", f"{ECR}:1.7-1", "broken")
    assert d["EndpointStatus"] == "Failed"
    assert "ping health check" in d["FailureReason"]


def test_create_training_job_xgboost_10_silent_accepted_model_pickled(server, data):
    sm = server.client("sagemaker")
    req = training_request("xgb-v10-silent", HyperParameters={"num_round": "3", "objective": "binary:logistic",
                                                                 "silent": "1"})
    req["AlgorithmSpecification"]["TrainingImage"] = f"{ECR}:1.0-1-cpu-py3"
    sm.create_training_job(**req)
    d = wait_for_status(sm, "xgb-v10-silent")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    blob = server.store().get_bytes("bucket1", "out/xgb-v10-silent/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        model = tar.extractfile("xgboost-model").read()
    assert model[:1] == b"\x80"  # a pickled Booster, as the 1.0-1 container writes it
    import xgboost as xgb

    assert isinstance(pickle.loads(model), xgb.Booster)  # noqa: S301 - written by this test's job


def test_create_training_job_xgboost_17_silent_fails_extraneous_hyperparameter(server, data):
    sm = server.client("sagemaker")
    req = training_request("xgb-v17-silent", HyperParameters={"num_round": "3", "silent": "1"})
    sm.create_training_job(**req)
    d = wait_for_status(sm, "xgb-v17-silent")
    assert d["TrainingJobStatus"] == "Failed"
    assert "Extraneous hyperparameter found: silent" in d["FailureReason"]
