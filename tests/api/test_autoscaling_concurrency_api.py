"""Application Auto Scaling on SageMaker's high-resolution ConcurrentRequestsPerModel metric (issue 8 item 7),
through boto3: the metric published from InvokeEndpoint every 10 s, the target-tracking alarms AWS creates for
SageMakerVariantConcurrentRequestsPerModelHighResolution, and the inference-component metric types refused
with the reason."""

from __future__ import annotations

import datetime as dt
import math
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.api.test_autoscaling_api import DIM, _act, _count_when, _endpoint
from tests.api.test_endpoints_api import models  # noqa: F401  (module fixture)

pytestmark = pytest.mark.slow

HIGH_RES = "SageMakerVariantConcurrentRequestsPerModelHighResolution"
ROW = "1," * 29 + "1"  # one breast-cancer row (30 features)


def _dims(endpoint: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]


def _policy(aas, rid: str, target: float) -> dict:
    return aas.put_scaling_policy(
        PolicyName="concurrency", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
            "TargetValue": target, "ScaleOutCooldown": 0, "ScaleInCooldown": 0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": HIGH_RES}})


def test_put_scaling_policy_concurrent_requests_high_resolution_alarms_scale_out(server, models):  # noqa: F811
    sm, aas, cw = server.client("sagemaker"), server.client("application-autoscaling"), server.client("cloudwatch")
    rid = "endpoint/ep-conc/variant/AllTraffic"
    _endpoint(server, "ep-conc", 1)
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=4)
    put = _policy(aas, rid, 5.0)
    names = [a["AlarmName"] for a in put["Alarms"]]
    assert [n.split("-")[-6] for n in names] == ["AlarmHigh", "AlarmLow"]
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    high, low = alarms[names[0]], alarms[names[1]]
    assert (high["Namespace"], high["MetricName"], high["Statistic"]) == \
        ("AWS/SageMaker", "ConcurrentRequestsPerModel", "Average")
    assert sorted(high["Dimensions"], key=lambda d: d["Name"]) == _dims("ep-conc")
    # Scale-out looks at three 10-second periods; scale-in at fifteen one-minute ones.
    assert (high["Period"], high["EvaluationPeriods"], high["DatapointsToAlarm"], high["Threshold"]) == (10, 3, 3, 5.0)
    assert (low["Period"], low["EvaluationPeriods"], low["DatapointsToAlarm"], low["Threshold"]) == (60, 15, 15, 4.5)
    assert high["AlarmActions"] == low["AlarmActions"] == [put["PolicyARN"]]

    # Thirty seconds at 12 concurrent requests per model (what serving/metrics.py writes, 10-second periods):
    # desired = ceil(1 x 12 / 5) = 3.
    now = math.floor(time.time() / 10) * 10
    server.platform.deps.metrics.put("AWS/SageMaker", {"EndpointName": "ep-conc", "VariantName": "AllTraffic"},
                                     [("ConcurrentRequestsPerModel", now - 10 * i, 12.0) for i in range(3)])
    _act(server, names)
    assert cw.describe_alarms(AlarmNames=[names[0]])["MetricAlarms"][0]["StateValue"] == "ALARM"
    _count_when(sm, "ep-conc", 3)
    aas.delete_scaling_policy(PolicyName="concurrency", ServiceNamespace="sagemaker", ResourceId=rid,
                              ScalableDimension=DIM)
    assert cw.describe_alarms(AlarmNames=names)["MetricAlarms"] == []


def test_invoke_endpoint_concurrently_publishes_concurrent_requests_per_model(server, models):  # noqa: F811
    """The 10-second periods' values add up to the model time InvokeEndpoint measured (ModelLatency)."""
    rt, cw = server.client("sagemaker-runtime"), server.client("cloudwatch")
    _endpoint(server, "ep-conc-metric", 1)
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)

    def invoke(_):
        return rt.invoke_endpoint(EndpointName="ep-conc-metric", ContentType="text/csv", Body=ROW)["Body"].read()

    with ThreadPoolExecutor(8) as pool:
        assert all(list(pool.map(invoke, range(80))))

    def stats(metric: str, period: int) -> list[dict]:
        return cw.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName=metric, Dimensions=_dims("ep-conc-metric"), Period=period,
            Statistics=["Sum", "Average", "Maximum", "SampleCount"], StartTime=started,
            EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))["Datapoints"]

    model_seconds = sum(p["Sum"] for p in stats("ModelLatency", 60)) / 1e6
    assert model_seconds > 0
    deadline = time.time() + 60  # the last period is written 10 s after it closes
    while True:
        points = stats("ConcurrentRequestsPerModel", 10)
        container_seconds = sum(p["Sum"] for p in points) * 10  # one instance: x 10 s per period
        if math.isclose(container_seconds, model_seconds, rel_tol=1e-6) or time.time() > deadline:
            break
        time.sleep(1)
    assert math.isclose(container_seconds, model_seconds, rel_tol=1e-6), (container_seconds, model_seconds)
    assert all(p["SampleCount"] == 1 and p["Unit"] == "None" for p in points)  # one value per 10-second period
    assert 0 < max(p["Maximum"] for p in points) <= 8  # never more in flight than the 8 callers
    names = {m["MetricName"] for m in cw.list_metrics(Namespace="AWS/SageMaker",
                                                      Dimensions=_dims("ep-conc-metric")[:1])["Metrics"]}
    assert "ConcurrentRequestsPerModel" in names


@pytest.mark.parametrize("metric", ["SageMakerInferenceComponentInvocationsPerCopy",
                                    "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution"])
def test_put_scaling_policy_inference_component_metric_is_validation_error_naming_why(server, models,  # noqa: F811
                                                                                      metric):
    aas = server.client("application-autoscaling")
    rid = "endpoint/ep-conc-ic/variant/AllTraffic"
    if not server.platform.deps.resources.get("endpoint", "ep-conc-ic"):
        _endpoint(server, "ep-conc-ic", 1)
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=2)
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(PolicyName="ic", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                               PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
                                   "TargetValue": 1.0, "PredefinedMetricSpecification": {
                                       "PredefinedMetricType": metric}})
    error = e.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert metric in error["Message"] and "no inference components" in error["Message"]
