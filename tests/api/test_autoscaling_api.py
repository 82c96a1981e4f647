"""Application Auto Scaling through boto3, and the target-tracking loop scaling a real endpoint."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from opensage.serving.autoscaler import Autoscaler, desired_capacity, internal_scale
from tests.api.test_endpoints_api import _config, _wait, models  # noqa: F401  (module fixture)

pytestmark = pytest.mark.slow

RID = "endpoint/ep-auto/variant/AllTraffic"


def test_desired_capacity_tracks_target_and_clamps():
    assert desired_capacity(250, 100, 1, 4) == 3
    assert desired_capacity(0, 100, 1, 4) == 1
    assert desired_capacity(10_000, 100, 1, 4) == 4


def test_register_target_put_policy_and_scale_out_then_in(server, models):  # noqa: F811
    sm, aas = server.client("sagemaker"), server.client("application-autoscaling")
    _config(sm, "ep-auto-cfg", [("AllTraffic", "ep-model-a", 1.0, 1)])
    sm.create_endpoint(EndpointName="ep-auto", EndpointConfigName="ep-auto-cfg")
    assert _wait(sm, "ep-auto")["EndpointStatus"] == "InService"
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(PolicyName="p", ServiceNamespace="sagemaker", ResourceId=RID,
                               ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                               PolicyType="TargetTrackingScaling",
                               TargetTrackingScalingPolicyConfiguration={"TargetValue": 100.0,
                                   "PredefinedMetricSpecification": {
                                       "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    assert e.value.response["Error"]["Code"] == "ObjectNotFoundException"
    aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=RID,
                                 ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                                 MinCapacity=1, MaxCapacity=3)
    aas.put_scaling_policy(PolicyName="p", ServiceNamespace="sagemaker", ResourceId=RID,
                           ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                           PolicyType="TargetTrackingScaling",
                           TargetTrackingScalingPolicyConfiguration={
                               "TargetValue": 100.0, "ScaleOutCooldown": 0, "ScaleInCooldown": 0,
                               "PredefinedMetricSpecification": {
                                   "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(RID, 1, 3)]
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]["PolicyName"] == "p"

    load = {"value": 250.0}  # invocations per minute; the source reports that rate since `since`
    scaler = Autoscaler(server.platform.deps, internal_scale(server.platform.dispatcher.handler(
        "sagemaker", "UpdateEndpointWeightsAndCapacities").__self__),
        source=lambda e, v, since: load["value"] * max((time.time() - since) / 60.0, 1.0))
    assert scaler.run_once() == [("ep-auto", "AllTraffic", 3)]
    d = _wait(sm, "ep-auto")
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 3
    load["value"] = 10.0
    time.sleep(0.1)
    assert scaler.run_once() == [("ep-auto", "AllTraffic", 1)]
    d = _wait(sm, "ep-auto")
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    activities = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=RID)["ScalingActivities"]
    assert len(activities) == 2 and "desired instance count to 1" in activities[0]["Description"]
    runtime = server.client("sagemaker-runtime")
    assert runtime.invoke_endpoint(EndpointName="ep-auto", ContentType="text/csv", Body="1," * 29 + "1")["Body"]
