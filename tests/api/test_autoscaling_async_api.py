"""An asynchronous endpoint scaled in to zero instances by target tracking on ApproximateBacklogSizePerInstance
and back out from zero by a step policy on HasBacklogWithoutCapacity, as AWS's async-inference autoscaling
example sets them up (boto3 application-autoscaling + cloudwatch clients)."""

from __future__ import annotations

import math
import time

import pytest

from tests.api.test_async_inference_api import BUCKET, _create_model, _csv, _deploy, _wait_object

pytestmark = pytest.mark.slow

DIM = "sagemaker:variant:DesiredInstanceCount"
ENDPOINT = "async-zero"
RID = f"endpoint/{ENDPOINT}/variant/AllTraffic"


def _instances(sm) -> int:
    return sm.describe_endpoint(EndpointName=ENDPOINT)["ProductionVariants"][0]["CurrentInstanceCount"]


def _until(sm, server, alarms: list[str], count: int, timeout: float = 60) -> None:
    """Evaluate the alarms and run the policies (what the background loops do each minute) until ``count``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        server.platform.alarms.evaluate_now(alarms)
        server.platform.autoscaler.run_once()
        d = sm.describe_endpoint(EndpointName=ENDPOINT)
        if d["EndpointStatus"] == "InService" and d["ProductionVariants"][0]["CurrentInstanceCount"] == count:
            return
        time.sleep(0.3)
    raise AssertionError(f"{ENDPOINT} never reached {count} instances: {d['ProductionVariants']}")


def test_async_endpoint_scales_in_to_zero_and_out_from_zero_with_backlog(server):
    sm, aas, cw = (server.client(s) for s in ("sagemaker", "application-autoscaling", "cloudwatch"))
    rt = server.client("sagemaker-runtime")
    rows = _create_model(server)
    _deploy(server, ENDPOINT, {"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/zero-out/"}})
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=RID, ScalableDimension=DIM,
                                 MinCapacity=0, MaxCapacity=2)
    tracking = aas.put_scaling_policy(
        PolicyName="Invocations-ScalingPolicy", ServiceNamespace="sagemaker", ResourceId=RID, ScalableDimension=DIM,
        PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0, "ScaleInCooldown": 0, "ScaleOutCooldown": 0,
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": ENDPOINT}], "Statistic": "Average"}})
    high, low = (a["AlarmName"] for a in tracking["Alarms"])
    alarm = cw.describe_alarms(AlarmNames=[high])["MetricAlarms"][0]
    assert (alarm["MetricName"], alarm["Statistic"], alarm["Threshold"]) == \
        ("ApproximateBacklogSizePerInstance", "Average", 5.0)
    step_arn = aas.put_scaling_policy(
        PolicyName="HasBacklogWithoutCapacity-ScalingPolicy", ServiceNamespace="sagemaker", ResourceId=RID,
        ScalableDimension=DIM, PolicyType="StepScaling", StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average", "Cooldown": 0,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]})["PolicyARN"]
    cw.put_metric_alarm(AlarmName="async-zero-backlog-without-capacity", MetricName="HasBacklogWithoutCapacity",
                        Namespace="AWS/SageMaker", Statistic="Average", EvaluationPeriods=1, DatapointsToAlarm=1,
                        Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="missing",
                        Dimensions=[{"Name": "EndpointName", "Value": ENDPOINT}], Period=60, AlarmActions=[step_arn])

    # Fifteen idle minutes of an empty queue (what SageMaker publishes every minute): AlarmLow scales to zero.
    now = math.floor(time.time() / 60) * 60
    server.platform.deps.metrics.put("AWS/SageMaker", {"EndpointName": ENDPOINT}, [
        ("ApproximateBacklogSizePerInstance", now - 60 * i, 0.0) for i in range(15)])
    _until(sm, server, [high, low], 0)

    # A request arrives with no instance: it waits, HasBacklogWithoutCapacity fires, the step policy adds one.
    server.store().put_bytes(BUCKET, "zero-in/req.csv", _csv(rows[:3]).encode())
    r = rt.invoke_endpoint_async(EndpointName=ENDPOINT, InputLocation=f"s3://{BUCKET}/zero-in/req.csv",
                                 ContentType="text/csv")
    time.sleep(1.5)
    assert _instances(sm) == 0 and not server.store().exists(BUCKET, r["OutputLocation"].split("/", 3)[3])
    _until(sm, server, ["async-zero-backlog-without-capacity", high, low], 1)
    scores = _wait_object(server, r["OutputLocation"], timeout=60).decode().split()
    assert len(scores) == 3
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=RID)["ScalingActivities"]
    assert [a["Description"] for a in activities] == ["Setting desired instance count to 1.",
                                                      "Setting desired instance count to 0."]
    assert "async-zero-backlog-without-capacity" in activities[0]["Cause"]
