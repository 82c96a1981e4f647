"""Application Auto Scaling through boto3, as AWS's autoscaling notebook uses it: target tracking through the
TargetTracking-...-AlarmHigh/AlarmLow alarms it creates, step scaling driven by a user's alarm.

Minutes of endpoint traffic are written into the metric store with past timestamps (what SageMaker would have
published over those minutes), so the 3- and 15-datapoint alarms decide without waiting for real minutes.
"""

from __future__ import annotations

import math
import re
import time

import pytest
from botocore.exceptions import ClientError

from opensage.serving.autoscaler import desired_capacity, step_capacity
from tests.api.test_endpoints_api import _config, _wait, models  # noqa: F401  (module fixture)

pytestmark = pytest.mark.slow

DIM = "sagemaker:variant:DesiredInstanceCount"


def _publish(server, endpoint: str, metric: str, values: list[float]) -> None:
    """One value per minute, the last in the current minute (SageMaker's per-minute endpoint metrics)."""
    now = math.floor(time.time() / 60) * 60
    points = [(metric, now - 60 * (len(values) - 1 - i), v) for i, v in enumerate(values)]
    server.platform.deps.metrics.put("AWS/SageMaker", {"EndpointName": endpoint, "VariantName": "AllTraffic"},
                                     points)


def _act(server, alarm_names: list[str]) -> None:
    """What the background loops do within a minute: evaluate the alarms, run the policies they name."""
    server.platform.alarms.evaluate_now(alarm_names)
    server.platform.autoscaler.run_once()


def _count_when(sm, endpoint: str, count: int, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = _wait(sm, endpoint)
        if d["ProductionVariants"][0]["CurrentInstanceCount"] == count:
            return d
        time.sleep(0.2)
    raise AssertionError(f"{endpoint} never reached {count} instances: {d['ProductionVariants']}")


def _endpoint(server, name: str, count: int) -> None:
    sm = server.client("sagemaker")
    _config(sm, f"{name}-cfg", [("AllTraffic", "ep-model-a", 1.0, count)])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-cfg")
    assert _wait(sm, name)["EndpointStatus"] == "InService"


def test_desired_capacity_tracks_target_and_clamps():
    assert desired_capacity(1, 250, 100, 1, 4) == 3
    assert desired_capacity(2, 10, 100, 1, 4) == 1
    assert desired_capacity(1, 10_000, 100, 1, 4) == 4
    assert desired_capacity(0, 7, 5, 0, 4) == 2  # from zero instances the metric counts the whole backlog
    steps = {"AdjustmentType": "ChangeInCapacity", "StepAdjustments": [
        {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 50, "ScalingAdjustment": 1},
        {"MetricIntervalLowerBound": 50, "ScalingAdjustment": 2}]}
    assert (step_capacity(1, 10, steps), step_capacity(1, 50, steps)) == (2, 3)
    pct = {"AdjustmentType": "PercentChangeInCapacity", "MinAdjustmentMagnitude": 2,
           "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 10}]}
    assert step_capacity(3, 5, pct) == 5


def test_put_scaling_policy_target_tracking_creates_alarms_that_scale_in_and_out(server, models):  # noqa: F811
    sm, aas, cw = server.client("sagemaker"), server.client("application-autoscaling"), server.client("cloudwatch")
    rid = "endpoint/ep-auto/variant/AllTraffic"
    _endpoint(server, "ep-auto", 2)
    tt = {"TargetValue": 100.0, "ScaleOutCooldown": 0, "ScaleInCooldown": 0,
          "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(PolicyName="p", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                               PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration=tt)
    assert e.value.response["Error"]["Code"] == "ObjectNotFoundException"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=3)
    put = aas.put_scaling_policy(PolicyName="p", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration=tt)
    # AWS's autoscaling notebook reads response["Alarms"][0]["AlarmName"]: AlarmHigh first, then AlarmLow.
    names = [a["AlarmName"] for a in put["Alarms"]]
    uuid_re = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(rf"TargetTracking-{rid}-AlarmHigh-{uuid_re}", names[0])
    assert re.fullmatch(rf"TargetTracking-{rid}-AlarmLow-{uuid_re}", names[1])
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix=f"TargetTracking-{rid}")["MetricAlarms"]}
    high, low = alarms[names[0]], alarms[names[1]]
    assert (high["MetricName"], high["Namespace"], high["Statistic"], high["Period"]) == \
        ("InvocationsPerInstance", "AWS/SageMaker", "Sum", 60)
    assert {d["Name"]: d["Value"] for d in high["Dimensions"]} == {"EndpointName": "ep-auto",
                                                                   "VariantName": "AllTraffic"}
    assert (high["Threshold"], high["EvaluationPeriods"], high["DatapointsToAlarm"], high["ComparisonOperator"]) == \
        (100.0, 3, 3, "GreaterThanThreshold")
    assert (low["Threshold"], low["EvaluationPeriods"], low["DatapointsToAlarm"], low["ComparisonOperator"]) == \
        (90.0, 15, 15, "LessThanThreshold")
    assert high["AlarmActions"] == low["AlarmActions"] == [put["PolicyARN"]]
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]["Alarms"] == put["Alarms"]

    # Fifteen quiet minutes (10 invocations per instance per minute, under 90% of 100): AlarmLow scales in.
    _publish(server, "ep-auto", "InvocationsPerInstance", [10.0] * 15)
    _act(server, names)
    assert {a["AlarmName"]: a["StateValue"] for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]} == \
        {names[0]: "OK", names[1]: "ALARM"}
    assert _count_when(sm, "ep-auto", 1)["ProductionVariants"][0]["DesiredInstanceCount"] == 1
    # Then three busy minutes (300 more per minute): AlarmHigh scales out, clamped to MaxCapacity.
    _publish(server, "ep-auto", "InvocationsPerInstance", [300.0] * 3)
    _act(server, names)
    _count_when(sm, "ep-auto", 3)
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingActivities"]
    assert [a["Description"] for a in activities[:2]] == ["Setting desired instance count to 3.",
                                                          "Setting desired instance count to 1."]
    assert names[0] in activities[0]["Cause"]
    history = cw.describe_alarm_history(AlarmName=names[0], HistoryItemType="Action")["AlarmHistoryItems"]
    assert history and history[0]["HistorySummary"] == f"Successfully executed action {put['PolicyARN']}"

    aas.delete_scaling_policy(PolicyName="p", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM)
    assert cw.describe_alarms(AlarmNamePrefix=f"TargetTracking-{rid}")["MetricAlarms"] == []
    runtime = server.client("sagemaker-runtime")
    assert runtime.invoke_endpoint(EndpointName="ep-auto", ContentType="text/csv", Body="1," * 29 + "1")["Body"]


def test_put_scaling_policy_step_scaling_runs_from_alarm_action(server, models):  # noqa: F811
    """A StepScaling policy on a custom metric, run by the user's alarm naming its ARN in AlarmActions."""
    sm, aas, cw = server.client("sagemaker"), server.client("application-autoscaling"), server.client("cloudwatch")
    rid = "endpoint/ep-step/variant/AllTraffic"
    _endpoint(server, "ep-step", 1)
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=4)
    arn = aas.put_scaling_policy(
        PolicyName="queue-depth", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
        PolicyType="StepScaling", StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average", "Cooldown": 0,
            "StepAdjustments": [
                {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 50, "ScalingAdjustment": 1},
                {"MetricIntervalLowerBound": 50, "ScalingAdjustment": 2}]})["PolicyARN"]
    cw.put_metric_alarm(AlarmName="queue-deep", Namespace="MyApp", MetricName="QueueDepth",
                        Dimensions=[{"Name": "Queue", "Value": "orders"}], Statistic="Average", Period=60,
                        EvaluationPeriods=1, Threshold=100.0, ComparisonOperator="GreaterThanThreshold",
                        AlarmActions=[arn])
    cw.put_metric_data(Namespace="MyApp", MetricData=[
        {"MetricName": "QueueDepth", "Dimensions": [{"Name": "Queue", "Value": "orders"}], "Value": 180.0}])
    _act(server, ["queue-deep"])
    _count_when(sm, "ep-step", 3)  # breach 80 over the threshold: the second step, +2
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker", PolicyNames=["queue-depth"])
    assert [a["AlarmName"] for a in policy["ScalingPolicies"][0]["Alarms"]] == ["queue-deep"]
    items = cw.describe_alarm_history(AlarmName="queue-deep", HistoryItemType="Action")["AlarmHistoryItems"]
    assert items[0]["HistorySummary"] == f"Successfully executed action {arn}"


@pytest.mark.parametrize("metric", ["SageMakerVariantProvisionedConcurrencyUtilization",
                                    "SageMakerInferenceComponentInvocationsPerCopy",
                                    "ECSServiceAverageCPUUtilization"])
def test_put_scaling_policy_unserved_predefined_metric_is_validation_error(server, models, metric):  # noqa: F811
    aas = server.client("application-autoscaling")
    rid = "endpoint/ep-auto/variant/AllTraffic"
    if not server.platform.deps.resources.get("endpoint", "ep-auto"):
        _endpoint(server, "ep-auto", 1)
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=3)
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(PolicyName="bad", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                               PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
                                   "TargetValue": 1.0, "PredefinedMetricSpecification": {
                                       "PredefinedMetricType": metric}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    message = e.value.response["Error"]["Message"]
    assert metric in message or message.startswith(f"Scalable dimension {DIM} only supports the following predefined")


def test_target_tracking_policy_from_an_older_home_gets_its_alarms(server):
    """A policy row written before the managed alarms existed (no PolicyType, no Alarms) gets them."""
    from opensage.services.autoscaling import POLICY
    from opensage.store.resources import Resource

    rid = "endpoint/ep-legacy/variant/AllTraffic"
    arn = f"arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:x:resource/sagemaker/{rid}:policyName/old"
    server.platform.deps.resources.create(Resource(POLICY, f"{rid}|old", arn, "Active", 0.0, 0.0, {
        "PolicyName": "old", "ServiceNamespace": "sagemaker", "ResourceId": rid, "ScalableDimension": DIM,
        "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 70.0, "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}}, {}))
    server.platform.autoscaler.run_once()
    policy = server.client("application-autoscaling").describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"][0]
    assert policy["PolicyType"] == "TargetTrackingScaling" and len(policy["Alarms"]) == 2
    alarms = server.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"TargetTracking-{rid}-")["MetricAlarms"]
    assert sorted(a["Threshold"] for a in alarms) == [63.0, 70.0]


def test_put_scaling_policy_customized_metric_math_is_validation_error(server, models):  # noqa: F811
    aas = server.client("application-autoscaling")
    rid = "endpoint/ep-auto/variant/AllTraffic"
    if not server.platform.deps.resources.get("endpoint", "ep-auto"):
        _endpoint(server, "ep-auto", 1)
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                                 MinCapacity=1, MaxCapacity=3)
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(PolicyName="math", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=DIM,
                               PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
                                   "TargetValue": 1.0, "CustomizedMetricSpecification": {"Metrics": [
                                       {"Id": "e1", "Expression": "m1 * 2", "ReturnData": True}]}})
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert server.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"TargetTracking-{rid}-")["MetricAlarms"] == []
