"""Endpoint metrics end to end: real model servers, InvokeEndpoint through boto3, read back through CloudWatch."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import train_xgb, xgb_model_tar

pytestmark = pytest.mark.slow

ENDPOINT = "ep-metrics"
FEATURES = 4


@pytest.fixture(scope="module")
def endpoint(server):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, FEATURES))
    booster = train_xgb(X, X[:, 0] > 0, 3, max_depth=6)
    store = server.store()
    store.ensure_bucket("bucket1")
    store.put_bytes("bucket1", "models/metrics/model.tar.gz", xgb_model_tar(booster))
    sm = server.client("sagemaker")
    sm.create_model(ModelName="metrics-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/models/metrics/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName="metrics-cfg", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "metrics-model", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName="metrics-cfg")
    deadline = time.time() + 90
    while (status := sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointStatus"]) == "Creating":
        assert time.time() < deadline, "endpoint did not start"
        time.sleep(0.2)
    assert status == "InService"
    return ENDPOINT


def _stats(cw, namespace: str, metric: str, stats: list[str]) -> list[dict]:
    now = dt.datetime.now(dt.UTC)
    return cw.get_metric_statistics(
        Namespace=namespace, MetricName=metric, Period=60, Statistics=stats,
        Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "AllTraffic"}],
        StartTime=now - dt.timedelta(minutes=5), EndTime=now + dt.timedelta(minutes=1))["Datapoints"]


def test_invocations_and_latencies_after_n_invokes(server, endpoint):
    rt, cw = server.client("sagemaker-runtime"), server.client("cloudwatch")
    n = 7
    for _ in range(n):
        rt.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=",".join(["0.5"] * FEATURES))
    with pytest.raises(rt.exceptions.ModelError):
        rt.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body="not,a,number")
    total = n + 1
    assert sum(p["Sum"] for p in _stats(cw, "AWS/SageMaker", "Invocations", ["Sum"])) == total
    assert sum(p["Sum"] for p in _stats(cw, "AWS/SageMaker", "InvocationsPerInstance", ["Sum"])) == total
    latency = _stats(cw, "AWS/SageMaker", "ModelLatency", ["Average", "SampleCount", "Minimum"])
    assert sum(p["SampleCount"] for p in latency) == total
    assert all(p["Minimum"] > 0 and p["Unit"] == "Microseconds" for p in latency)
    overhead = _stats(cw, "AWS/SageMaker", "OverheadLatency", ["Average"])
    assert overhead and all(p["Average"] > 0 for p in overhead)
    errors = {m: sum(p["Sum"] for p in _stats(cw, "AWS/SageMaker", m, ["Sum"]))
              for m in ("Invocation4XXErrors", "Invocation5XXErrors", "InvocationModelErrors")}
    bad = errors["Invocation4XXErrors"] + errors["Invocation5XXErrors"]
    assert bad == 1 and errors["InvocationModelErrors"] == 1
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="AWS/SageMaker", Dimensions=[
        {"Name": "EndpointName", "Value": endpoint}])["Metrics"]}
    assert {"Invocations", "ModelLatency", "OverheadLatency", "InvocationsPerInstance"} <= names


def test_cpu_and_memory_utilization_sampled_per_variant(server, endpoint):
    metrics = server.platform.endpoint_metrics
    metrics.sample_utilization()
    server.client("sagemaker-runtime").invoke_endpoint(EndpointName=endpoint, ContentType="text/csv",
                                                       Body=",".join(["0.1"] * FEATURES))
    time.sleep(0.2)
    assert metrics.sample_utilization() >= 2  # CPU needs two samples; memory is there from the first
    cw = server.client("cloudwatch")
    memory = _stats(cw, "/aws/sagemaker/Endpoints", "MemoryUtilization", ["Maximum"])
    assert memory and 0 < memory[0]["Maximum"] < 100 and memory[0]["Unit"] == "Percent"
    cpu = _stats(cw, "/aws/sagemaker/Endpoints", "CPUUtilization", ["SampleCount", "Minimum"])
    assert cpu and cpu[0]["SampleCount"] >= 1 and cpu[0]["Minimum"] >= 0
