"""Application Auto Scaling of a serverless variant's provisioned concurrency (issue 8 item 7), through boto3 as
AWS's "Automatically scale Provisioned Concurrency for a serverless endpoint" guide uses it: the
sagemaker:variant:DesiredProvisionedConcurrency dimension, SageMakerVariantProvisionedConcurrencyUtilization
target tracking (its AlarmHigh/AlarmLow alarms on ServerlessProvisionedConcurrencyUtilization), and a scaling
action that changes the variant's ProvisionedConcurrency as DescribeEndpoint shows it."""

from __future__ import annotations

import datetime as dt
import math
import time

import pytest
from botocore.exceptions import ClientError

from tests.api.test_endpoints_api import _csv, _wait
from tests.conftest import ROLE, XGB_IMAGE, start_server
from tests.modelfiles import breast_cancer_xgb

pytestmark = pytest.mark.slow

PC_DIM = "sagemaker:variant:DesiredProvisionedConcurrency"
METRIC_TYPE = "SageMakerVariantProvisionedConcurrencyUtilization"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def rows(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    blob, X, _, _ = breast_cancer_xgb(5)
    store.put_bytes("bucket1", "models/pc-model/model.tar.gz", blob)
    server.client("sagemaker").create_model(ModelName="pc-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/models/pc-model/model.tar.gz"})
    return X


def _endpoint(server, name: str, **variant) -> dict:
    sm = server.client("sagemaker")
    sm.create_endpoint_config(EndpointConfigName=f"{name}-cfg", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "pc-model", **variant}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-cfg")
    d = _wait(sm, name)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    return d


def _register(aas, endpoint: str, mn: int, mx: int) -> dict:
    return aas.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=f"endpoint/{endpoint}/variant/AllTraffic",
                                        ScalableDimension=PC_DIM, MinCapacity=mn, MaxCapacity=mx)


def _dims(endpoint: str) -> list[dict[str, str]]:
    return [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": "AllTraffic"}]


def test_register_scalable_target_provisioned_concurrency_on_unprovisioned_variant_is_validation_error(server, rows):
    aas = server.client("application-autoscaling")
    _endpoint(server, "pc-instances", InitialInstanceCount=1, InstanceType="ml.m5.large")
    _endpoint(server, "pc-on-demand", ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": 2})
    for endpoint in ("pc-instances", "pc-on-demand"):  # not serverless; serverless without ProvisionedConcurrency
        with pytest.raises(ClientError) as e:
            _register(aas, endpoint, 1, 2)
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert PC_DIM in e.value.response["Error"]["Message"]
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_register_scalable_target_provisioned_concurrency_outside_max_concurrency_is_validation_error(server, rows):
    aas = server.client("application-autoscaling")
    _endpoint(server, "pc-bounds", ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": 4,
                                                     "ProvisionedConcurrency": 1})
    for mn, mx in ((1, 5), (0, 2)):
        with pytest.raises(ClientError) as e:
            _register(aas, "pc-bounds", mn, mx)
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert "MaxConcurrency" in e.value.response["Error"]["Message"]
    _register(aas, "pc-bounds", 1, 4)
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker",
                                            ResourceIds=["endpoint/pc-bounds/variant/AllTraffic"])["ScalableTargets"]
    assert [(t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(PC_DIM, 1, 4)]


def test_put_scaling_policy_provisioned_concurrency_alarm_high_raises_provisioned_concurrency(server, rows):
    sm, aas, cw = server.client("sagemaker"), server.client("application-autoscaling"), server.client("cloudwatch")
    rid = "endpoint/pc-scale/variant/AllTraffic"
    d = _endpoint(server, "pc-scale", ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": 4,
                                                        "ProvisionedConcurrency": 1})
    assert d["ProductionVariants"][0]["CurrentServerlessConfig"]["ProvisionedConcurrency"] == 1
    _register(aas, "pc-scale", 1, 4)
    # The instance-count metric types belong to the other dimension (AWS names the ones that fit).
    with pytest.raises(ClientError) as e:
        aas.put_scaling_policy(PolicyName="wrong", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=PC_DIM,
                               PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
                                   "TargetValue": 0.5, "PredefinedMetricSpecification": {
                                       "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})
    assert METRIC_TYPE in e.value.response["Error"]["Message"]
    put = aas.put_scaling_policy(
        PolicyName="pc-tracking", ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=PC_DIM,
        PolicyType="TargetTrackingScaling", TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 0.5, "ScaleOutCooldown": 0, "ScaleInCooldown": 0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC_TYPE}})
    names = [a["AlarmName"] for a in put["Alarms"]]
    assert [n.split("-")[-6] for n in names] == ["AlarmHigh", "AlarmLow"]
    assert all(n.startswith(f"TargetTracking-{rid}-") for n in names)
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    high, low = alarms[names[0]], alarms[names[1]]
    assert (high["Namespace"], high["MetricName"], high["Statistic"]) == \
        ("AWS/SageMaker", "ServerlessProvisionedConcurrencyUtilization", "Average")
    assert sorted(high["Dimensions"], key=lambda x: x["Name"]) == _dims("pc-scale")
    assert (high["Period"], high["EvaluationPeriods"], high["DatapointsToAlarm"], high["Threshold"]) == (60, 3, 3, 0.5)
    assert (low["Period"], low["EvaluationPeriods"], low["DatapointsToAlarm"], low["Threshold"]) == (60, 15, 15, 0.45)
    assert high["AlarmActions"] == low["AlarmActions"] == [put["PolicyARN"]]
    policy = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"][0]
    assert policy["ScalableDimension"] == PC_DIM

    # Its one provisioned request fully used for three minutes: desired = ceil(1 x 1.0 / 0.5) = 2.
    now = math.floor(time.time() / 60) * 60
    server.platform.deps.metrics.put("AWS/SageMaker", {"EndpointName": "pc-scale", "VariantName": "AllTraffic"},
                                     [("ServerlessProvisionedConcurrencyUtilization", now - 60 * i, 1.0)
                                      for i in range(3)])
    cw.set_alarm_state(AlarmName=names[0], StateValue="ALARM", StateReason="provisioned concurrency saturated")
    assert server.platform.autoscaler.run_once() == [("pc-scale", "AllTraffic", 2)]
    deadline = time.time() + 90
    while time.time() < deadline:
        d = _wait(sm, "pc-scale")
        if d["ProductionVariants"][0]["CurrentServerlessConfig"].get("ProvisionedConcurrency") == 2:
            break
        time.sleep(0.2)
    pv = d["ProductionVariants"][0]
    assert pv["CurrentServerlessConfig"] == pv["DesiredServerlessConfig"] == {
        "MemorySizeInMB": 1024, "MaxConcurrency": 4, "ProvisionedConcurrency": 2}
    activity = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingActivities"][0]
    assert activity["ScalableDimension"] == PC_DIM and activity["StatusCode"] == "Successful"
    aas.deregister_scalable_target(ServiceNamespace="sagemaker", ResourceId=rid, ScalableDimension=PC_DIM)
    assert cw.describe_alarms(AlarmNames=names)["MetricAlarms"] == []


def test_invoke_endpoint_publishes_provisioned_concurrency_utilization(server, rows):
    """The minutes' values x 60 s x ProvisionedConcurrency add up to the model time InvokeEndpoint measured."""
    rt, cw = server.client("sagemaker-runtime"), server.client("cloudwatch")
    _endpoint(server, "pc-metric", ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": 4,
                                                     "ProvisionedConcurrency": 2})
    started = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
    for _ in range(20):
        assert rt.invoke_endpoint(EndpointName="pc-metric", ContentType="text/csv", Body=_csv(rows[:4]))["Body"].read()

    def stats(metric: str) -> list[dict]:
        return cw.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName=metric, Dimensions=_dims("pc-metric"), Period=60,
            Statistics=["Sum", "Average", "SampleCount"], StartTime=started,
            EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))["Datapoints"]

    model_seconds = sum(p["Sum"] for p in stats("ModelLatency")) / 1e6
    assert model_seconds > 0
    deadline = time.time() + 100  # a minute is written 10 s after it closed
    while True:
        points = stats("ServerlessProvisionedConcurrencyUtilization")
        provisioned_seconds = sum(p["Sum"] for p in points) * 60 * 2  # x 60 s x ProvisionedConcurrency 2
        if math.isclose(provisioned_seconds, model_seconds, rel_tol=1e-5) or time.time() > deadline:
            break
        time.sleep(1)
    assert math.isclose(provisioned_seconds, model_seconds, rel_tol=1e-5), (provisioned_seconds, model_seconds)
    assert all(p["SampleCount"] == 1 for p in points)  # one value per minute
    assert all(0 <= p["Average"] <= 1 for p in points)


def test_update_endpoint_weights_and_capacities_serverless_update_checked(server, rows):
    sm = server.client("sagemaker")
    _endpoint(server, "pc-upd-instances", InitialInstanceCount=1, InstanceType="ml.m5.large")
    _endpoint(server, "pc-upd-serverless", ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": 2,
                                                             "ProvisionedConcurrency": 1})
    for endpoint, pc, words in (("pc-upd-instances", 1, "not serverless"), ("pc-upd-serverless", 3, "MaxConcurrency")):
        with pytest.raises(ClientError) as e:
            sm.update_endpoint_weights_and_capacities(EndpointName=endpoint, DesiredWeightsAndCapacities=[
                {"VariantName": "AllTraffic", "ServerlessUpdateConfig": {"ProvisionedConcurrency": pc}}])
        assert e.value.response["Error"]["Code"] == "ValidationException" and words in str(e.value)
