"""Shadow variants, serverless variants (cold start, scale to zero, MaxConcurrency) and auto-rollback on
alarms, through boto3 against the in-process control plane with real model servers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.api.test_endpoints_api import _csv, _wait
from tests.conftest import ROLE, XGB_IMAGE, start_server
from tests.modelfiles import breast_cancer_xgb

pytestmark = pytest.mark.slow

IDLE_SECONDS = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("home"), serverless_idle_seconds=IDLE_SECONDS)


@pytest.fixture(scope="module")
def rows(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    sm = server.client("sagemaker")
    X = None
    for name, rounds in (("var-model-a", 5), ("var-model-b", 20)):
        blob, X, _, _ = breast_cancer_xgb(rounds)
        store.put_bytes("bucket1", f"models/{name}/model.tar.gz", blob)
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGB_IMAGE, "ModelDataUrl": f"s3://bucket1/models/{name}/model.tar.gz"})
    return X


def _predict(rt, endpoint: str, rows, **kw) -> tuple[list[float], str]:
    out = rt.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=_csv(rows), **kw)
    return [float(v) for v in out["Body"].read().decode().split()], out["InvokedProductionVariant"]


def _variant(name: str, model: str, weight: float = 1.0, **extra) -> dict:
    return {"VariantName": name, "ModelName": model, "InitialVariantWeight": weight, **extra}


def test_shadow_variant_gets_copies_but_never_answers(server, rows):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    cw = server.client("cloudwatch")
    sm.create_endpoint_config(
        EndpointConfigName="shadow-cfg",
        ProductionVariants=[_variant("Prod", "var-model-a", InitialInstanceCount=1)],
        ShadowProductionVariants=[_variant("Shadow", "var-model-b", InitialInstanceCount=1)],
        DataCaptureConfig={"EnableCapture": True, "InitialSamplingPercentage": 100,
                           "DestinationS3Uri": "s3://bucket1/shadow-capture",
                           "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]})
    sm.create_endpoint(EndpointName="shadow-ep", EndpointConfigName="shadow-cfg")
    d = _wait(sm, "shadow-ep")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    assert [v["VariantName"] for v in d["ProductionVariants"]] == ["Prod"]
    assert [v["VariantName"] for v in d["ShadowProductionVariants"]] == ["Shadow"]
    assert d["ShadowProductionVariants"][0]["CurrentInstanceCount"] == 1

    baseline, _ = _predict(rt, "shadow-ep", rows[:3], TargetVariant="Prod")
    for _ in range(10):
        scores, variant = _predict(rt, "shadow-ep", rows[:3])
        assert variant == "Prod"
        assert scores == baseline  # always the production model's answer (the shadow model differs)
    with pytest.raises(ClientError) as err:  # a shadow is not a production variant
        _predict(rt, "shadow-ep", rows[:3], TargetVariant="Shadow")
    assert err.value.response["Error"]["Code"] == "ValidationError"

    deadline = time.time() + 10  # the copies run after the answers: wait for them to be counted
    shadow_calls = 0.0
    while time.time() < deadline and shadow_calls < 11:
        stats = cw.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName="Invocations", Statistics=["Sum"], Period=60,
            StartTime=time.time() - 600, EndTime=time.time() + 60,
            Dimensions=[{"Name": "EndpointName", "Value": "shadow-ep"}, {"Name": "VariantName", "Value": "Shadow"}])
        shadow_calls = sum(p["Sum"] for p in stats["Datapoints"])
        time.sleep(0.2)
    assert shadow_calls == 11  # every request was copied (shadow weight 1 / production weight 1)

    server.platform.capture.flush()
    store = server.store()
    keys = [o.key for o in store.list("bucket1", "shadow-capture/shadow-ep/Shadow/")]
    assert keys, "the shadow's answers are captured"
    captured = [json.loads(line) for k in keys for line in store.get_bytes("bucket1", k).decode().splitlines()]
    shadow_scores = [float(v) for v in captured[0]["captureData"]["endpointOutput"]["data"].split()]
    assert shadow_scores != baseline
    sm.delete_endpoint(EndpointName="shadow-ep")


def test_shadow_config_allows_one_production_and_one_shadow_variant(server, rows):
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as err:
        sm.create_endpoint_config(
            EndpointConfigName="shadow-bad",
            ProductionVariants=[_variant("A", "var-model-a", InitialInstanceCount=1),
                                _variant("B", "var-model-a", InitialInstanceCount=1)],
            ShadowProductionVariants=[_variant("S", "var-model-b", InitialInstanceCount=1)])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "ShadowProductionVariants" in err.value.response["Error"]["Message"]


def _live_replicas(server, endpoint: str, variant: str) -> int:
    route = server.platform.router.get(endpoint)
    return next(len(v.replicas) for v in route.variants if v.name == variant)


def test_serverless_variant_cold_starts_and_scales_to_zero_when_idle(server, rows):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    sm.create_endpoint_config(EndpointConfigName="sls-cfg", ProductionVariants=[
        _variant("AllTraffic", "var-model-a", ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 2})])
    sm.create_endpoint(EndpointName="sls-ep", EndpointConfigName="sls-cfg")
    d = _wait(sm, "sls-ep")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    pv = d["ProductionVariants"][0]
    assert pv["CurrentServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 2}
    assert "CurrentInstanceCount" not in pv
    assert _live_replicas(server, "sls-ep", "AllTraffic") == 0  # nothing runs until the first request

    started = time.time()
    cold, variant = _predict(rt, "sls-ep", rows[:4])  # waits for the cold start
    assert variant == "AllTraffic" and len(cold) == 4
    assert time.time() - started < 30
    assert _live_replicas(server, "sls-ep", "AllTraffic") == 1
    warm, _ = _predict(rt, "sls-ep", rows[:4])
    assert warm == cold

    deadline = time.time() + IDLE_SECONDS + 15
    while time.time() < deadline and _live_replicas(server, "sls-ep", "AllTraffic"):
        time.sleep(0.2)
    assert _live_replicas(server, "sls-ep", "AllTraffic") == 0, "an idle serverless variant scales to zero"
    again, _ = _predict(rt, "sls-ep", rows[:4])
    assert again == cold
    with pytest.raises(ClientError) as err:
        sm.update_endpoint_weights_and_capacities(EndpointName="sls-ep", DesiredWeightsAndCapacities=[
            {"VariantName": "AllTraffic", "DesiredInstanceCount": 3}])
    assert "serverless" in err.value.response["Error"]["Message"]
    sm.delete_endpoint(EndpointName="sls-ep")


def test_serverless_variant_beyond_max_concurrency_is_throttled(server, rows):
    sm = server.client("sagemaker")
    rt = server.client("sagemaker-runtime")  # max_attempts 1: boto3 would retry a throttle
    sm.create_endpoint_config(EndpointConfigName="sls-cap-cfg", ProductionVariants=[
        _variant("AllTraffic", "var-model-a", ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": 1})])
    sm.create_endpoint(EndpointName="sls-cap", EndpointConfigName="sls-cap-cfg")
    assert _wait(sm, "sls-cap")["EndpointStatus"] == "InService"
    variant = server.platform.router.get("sls-cap").variants[0]
    variant.outstanding["in-flight"] = 1  # as if one request were running (MaxConcurrency 1)
    try:
        with pytest.raises(ClientError) as err:
            _predict(rt, "sls-cap", rows[:2])
    finally:
        variant.outstanding.pop("in-flight")
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert "MaxConcurrency" in err.value.response["Error"]["Message"]
    assert len(_predict(rt, "sls-cap", rows[:2])[0]) == 2
    sm.delete_endpoint(EndpointName="sls-cap")


def test_update_rolls_back_when_a_rollback_alarm_fires_during_baking(server, rows):
    sm, rt, cw = (server.client(s) for s in ("sagemaker", "sagemaker-runtime", "cloudwatch"))
    for name, model in (("rb-old", "var-model-a"), ("rb-new", "var-model-b")):
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
            _variant("AllTraffic", model, InitialInstanceCount=1)])
    sm.create_endpoint(EndpointName="rb-ep", EndpointConfigName="rb-old")
    assert _wait(sm, "rb-ep")["EndpointStatus"] == "InService"
    old_scores, _ = _predict(rt, "rb-ep", rows[:3])
    cw.put_metric_alarm(AlarmName="rb-errors", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
                        Dimensions=[{"Name": "EndpointName", "Value": "rb-ep"},
                                    {"Name": "VariantName", "Value": "AllTraffic"}],
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching")

    sm.update_endpoint(EndpointName="rb-ep", EndpointConfigName="rb-new", DeploymentConfig={
        "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE",
                                                                  "WaitIntervalInSeconds": 0},
                                  "TerminationWaitInSeconds": 120},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "rb-errors"}]}})
    deadline = time.time() + 60  # baking: the new fleet takes the traffic, the status is still Updating
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName="rb-ep")
        if d["EndpointConfigName"] == "rb-new":
            break
        time.sleep(0.2)
    assert (d["EndpointStatus"], d["EndpointConfigName"]) == ("Updating", "rb-new")
    new_scores, _ = _predict(rt, "rb-ep", rows[:3])
    assert new_scores != old_scores

    cw.set_alarm_state(AlarmName="rb-errors", StateValue="ALARM", StateReason="testing the rollback")
    deadline = time.time() + 60
    statuses = set()
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName="rb-ep")
        statuses.add(d["EndpointStatus"])
        if d["EndpointStatus"] == "InService":
            break
        time.sleep(0.1)
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "rb-old"
    assert "rb-errors" in d["FailureReason"]
    assert _predict(rt, "rb-ep", rows[:3])[0] == old_scores
    sm.delete_endpoint(EndpointName="rb-ep")


def test_retired_fleet_listed_in_the_row_is_stopped_by_a_restarted_reconciler(server, rows):
    """A control plane killed mid-drain: the fleet it was retiring is in the row, and the next one stops it."""
    from opensage.serving.deployments import DeploymentReconciler
    from opensage.serving.replicas import Replica, ReplicaManager
    from opensage.serving.router import Router

    sm = server.client("sagemaker")
    sm.create_endpoint_config(EndpointConfigName="retire-cfg", ProductionVariants=[
        _variant("AllTraffic", "var-model-a", InitialInstanceCount=1)])
    sm.create_endpoint(EndpointName="retire-ep", EndpointConfigName="retire-cfg")
    assert _wait(sm, "retire-ep")["EndpointStatus"] == "InService"
    deps = server.platform.deps
    variant = deps.resources.get("endpoint", "retire-ep").state["_fleet"]["variants"][0]
    manager = ReplicaManager()
    orphan = manager.start(Path(variant["model_dir"]), variant["kind"], {"OMP_NUM_THREADS": "1"},
                           server.settings.home / "orphan.log")
    try:
        ep = deps.resources.get("endpoint", "retire-ep")
        ep.state["_retiring"] = [{"variants": [{"replicas": [{**orphan.to_state(), "ready": True}]}]}]
        deps.resources.save(ep, time.time())
        fresh = DeploymentReconciler(deps, ReplicaManager(), Router(), server.platform.deployments.store_spec)
        fresh.run_once()
        deadline = time.time() + 10
        while time.time() < deadline and manager.running(orphan):
            time.sleep(0.1)
        assert not manager.running(orphan)
        assert "_retiring" not in deps.resources.get("endpoint", "retire-ep").state
        assert _predict(server.client("sagemaker-runtime"), "retire-ep", rows[:2])[1] == "AllTraffic"
    finally:
        manager.stop(Replica.from_state(orphan.to_state()), grace=1.0)
        sm.delete_endpoint(EndpointName="retire-ep")
