"""Inference experiments (shadow tests) as AWS's shadow-testing examples drive them with boto3: a real
shadow variant on a real endpoint, its metrics in CloudWatch, its data captured, then promoted or removed."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from tests.api.test_endpoints_api import _csv, _wait
from tests.conftest import ROLE, XGB_IMAGE, start_server
from tests.modelfiles import breast_cancer_xgb

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def rows(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    sm = server.client("sagemaker")
    X = None
    for name, rounds in (("ie-model-a", 5), ("ie-model-b", 20)):
        blob, X, _, _ = breast_cancer_xgb(rounds)
        store.put_bytes("bucket1", f"models/{name}/model.tar.gz", blob)
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGB_IMAGE, "ModelDataUrl": f"s3://bucket1/models/{name}/model.tar.gz"})
    return X


def _endpoint(sm, name: str) -> None:
    sm.create_endpoint_config(EndpointConfigName=f"{name}-cfg", ProductionVariants=[
        {"VariantName": "Production", "ModelName": "ie-model-a", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.xlarge", "InitialVariantWeight": 1.0}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-cfg")
    assert _wait(sm, name)["EndpointStatus"] == "InService"


def _variant(name: str, model: str) -> dict:
    return {"ModelName": model, "VariantName": name, "InfrastructureConfig": {
        "InfrastructureType": "RealTimeInference",
        "RealTimeInferenceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}}}


def _experiment(sm, name: str, endpoint: str, percent: int = 100, **extra) -> str:
    return sm.create_inference_experiment(
        Name=name, Type="ShadowMode", RoleArn=ROLE, EndpointName=endpoint,
        Description="shadow test of the 20-round model",
        ModelVariants=[_variant("Production", "ie-model-a"), _variant("Shadow", "ie-model-b")],
        ShadowModeConfig={"SourceModelVariantName": "Production",
                          "ShadowModelVariants": [{"ShadowModelVariantName": "Shadow", "SamplingPercentage": percent}]},
        **extra)["InferenceExperimentArn"]


def _wait_status(sm, name: str, wanted: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_inference_experiment(Name=name)
        if d["Status"] == wanted:
            return d
        time.sleep(0.2)
    raise AssertionError(f"experiment {name} is {d['Status']}, not {wanted} ({d.get('StatusReason')})")


def _invocations(cw, endpoint: str, variant: str, metric: str = "Invocations", stat: str = "Sum") -> float:
    stats = cw.get_metric_statistics(
        Namespace="AWS/SageMaker", MetricName=metric, Statistics=[stat], Period=60,
        StartTime=time.time() - 600, EndTime=time.time() + 60,
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}])
    return sum(p[stat] for p in stats["Datapoints"])


def test_inference_experiment_shadow_mode_runs_compares_and_promotes_the_shadow(server, rows):
    sm, rt, cw = (server.client(s) for s in ("sagemaker", "sagemaker-runtime", "cloudwatch"))
    _endpoint(sm, "ie-ep")
    body = _csv(rows[:2])
    production = rt.invoke_endpoint(EndpointName="ie-ep", ContentType="text/csv", Body=body)["Body"].read()

    arn = _experiment(sm, "ie-shadow", "ie-ep", DataStorageConfig={"Destination": "s3://bucket1/shadow-data"})
    assert arn.endswith(":inference-experiment/ie-shadow")
    d = _wait_status(sm, "ie-shadow", "Running")
    assert d["EndpointMetadata"]["EndpointStatus"] == "InService"
    assert [v["Status"] for v in d["ModelVariants"]] == ["InService", "InService"]
    assert d["Schedule"]["EndTime"] - d["Schedule"]["StartTime"] == timedelta(days=7)  # no Schedule: 7 days
    ep = sm.describe_endpoint(EndpointName="ie-ep")
    assert [v["VariantName"] for v in ep["ShadowProductionVariants"]] == ["Shadow"]
    assert ep["EndpointConfigName"] == d["EndpointMetadata"]["EndpointConfigName"]

    for _ in range(8):
        out = rt.invoke_endpoint(EndpointName="ie-ep", ContentType="text/csv", Body=body)
        assert out["InvokedProductionVariant"] == "Production"
        assert out["Body"].read() == production  # the caller always gets the production model's answer
    deadline = time.time() + 10  # the shadow's copies run after the answers
    while time.time() < deadline and _invocations(cw, "ie-ep", "Shadow") < 8:
        time.sleep(0.2)
    # The comparison the console draws: per-variant invocations, latency and errors in AWS/SageMaker.
    assert _invocations(cw, "ie-ep", "Shadow") == 8
    assert _invocations(cw, "ie-ep", "Production") >= 8
    for variant in ("Production", "Shadow"):
        assert _invocations(cw, "ie-ep", variant, "ModelLatency", "SampleCount") >= 8
    server.platform.capture.flush()
    keys = [o.key for o in server.store().list("bucket1", "shadow-data/ie-ep/Shadow/")]
    assert keys, "DataStorageConfig: the shadow's requests and answers are captured"
    record = json.loads(server.store().get_bytes("bucket1", keys[0]).decode().splitlines()[0])
    assert record["captureData"]["endpointOutput"]["data"].encode() != production

    listed = sm.list_inference_experiments(StatusEquals="Running")["InferenceExperiments"]
    assert [e["Name"] for e in listed] == ["ie-shadow"]
    with pytest.raises(ClientError) as err:
        sm.delete_inference_experiment(Name="ie-shadow")
    assert err.value.response["Error"]["Code"] == "ConflictException"

    sm.stop_inference_experiment(Name="ie-shadow", ModelVariantActions={"Production": "Remove", "Shadow": "Promote"},
                                 DesiredState="Completed", Reason="the shadow model is better")
    d = _wait_status(sm, "ie-shadow", "Completed")
    assert d["StatusReason"] == "the shadow model is better" and "CompletionTime" in d
    assert {v["VariantName"]: v["Status"] for v in d["ModelVariants"]} == {"Production": "Deleted",
                                                                           "Shadow": "InService"}
    ep = sm.describe_endpoint(EndpointName="ie-ep")
    assert [v["VariantName"] for v in ep["ProductionVariants"]] == ["Shadow"]
    assert "ShadowProductionVariants" not in ep
    out = rt.invoke_endpoint(EndpointName="ie-ep", ContentType="text/csv", Body=body)
    assert out["InvokedProductionVariant"] == "Shadow" and out["Body"].read() != production

    sm.delete_inference_experiment(Name="ie-shadow")
    with pytest.raises(ClientError) as err:
        sm.describe_inference_experiment(Name="ie-shadow")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    assert sm.describe_endpoint(EndpointName="ie-ep")["EndpointStatus"] == "InService"  # the endpoint stays
    sm.delete_endpoint(EndpointName="ie-ep")


def test_inference_experiment_scheduled_start_update_and_remove_the_shadow(server, rows):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _endpoint(sm, "ie-sched")
    later = datetime.now(UTC) + timedelta(hours=1)
    _experiment(sm, "ie-later", "ie-sched", percent=50,
                Schedule={"StartTime": later, "EndTime": later + timedelta(days=2)})
    d = sm.describe_inference_experiment(Name="ie-later")
    assert d["Status"] == "Created" and d["Description"] == "shadow test of the 20-round model"
    assert "ShadowProductionVariants" not in sm.describe_endpoint(EndpointName="ie-sched")

    with pytest.raises(ClientError) as err:
        _experiment(sm, "ie-later", "ie-sched")
    assert err.value.response["Error"]["Code"] == "ResourceInUse"

    sm.start_inference_experiment(Name="ie-later")
    _wait_status(sm, "ie-later", "Running")
    with pytest.raises(ClientError) as err:
        sm.start_inference_experiment(Name="ie-later")
    assert err.value.response["Error"]["Code"] == "ConflictException"
    shadow = sm.describe_endpoint(EndpointName="ie-sched")["ShadowProductionVariants"][0]
    assert shadow["CurrentWeight"] == 0.5  # half of the production weight: half of the requests are copied

    sm.update_inference_experiment(Name="ie-later", ShadowModeConfig={
        "SourceModelVariantName": "Production",
        "ShadowModelVariants": [{"ShadowModelVariantName": "Shadow", "SamplingPercentage": 20}]})
    assert sm.describe_inference_experiment(Name="ie-later")["Status"] in ("Updating", "Running")
    d = _wait_status(sm, "ie-later", "Running")
    assert d["ShadowModeConfig"]["ShadowModelVariants"][0]["SamplingPercentage"] == 20
    assert sm.describe_endpoint(EndpointName="ie-sched")["ShadowProductionVariants"][0]["CurrentWeight"] == 0.2

    sm.stop_inference_experiment(Name="ie-later", ModelVariantActions={"Production": "Retain", "Shadow": "Remove"},
                                 DesiredState="Cancelled")
    _wait_status(sm, "ie-later", "Cancelled")
    ep = sm.describe_endpoint(EndpointName="ie-sched")
    assert [v["VariantName"] for v in ep["ProductionVariants"]] == ["Production"]
    assert "ShadowProductionVariants" not in ep
    out = rt.invoke_endpoint(EndpointName="ie-sched", ContentType="text/csv", Body=_csv(rows[:1]))
    assert out["InvokedProductionVariant"] == "Production"
    sm.delete_endpoint(EndpointName="ie-sched")


def test_create_inference_experiment_source_not_on_endpoint_is_validation_error(server, rows):
    sm = server.client("sagemaker")
    _endpoint(sm, "ie-val")
    with pytest.raises(ClientError) as err:
        sm.create_inference_experiment(
            Name="ie-bad", Type="ShadowMode", RoleArn=ROLE, EndpointName="ie-val",
            ModelVariants=[_variant("Other", "ie-model-a"), _variant("Shadow", "ie-model-b")],
            ShadowModeConfig={"SourceModelVariantName": "Other", "ShadowModelVariants": [
                {"ShadowModelVariantName": "Shadow", "SamplingPercentage": 100}]})
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "SourceModelVariantName" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.stop_inference_experiment(Name="ie-missing", ModelVariantActions={"Shadow": "Remove"})
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    assert sm.list_inference_experiments(NameContains="ie-bad")["InferenceExperiments"] == []
    sm.delete_endpoint(EndpointName="ie-val")


def test_inference_experiment_reaching_its_end_time_reverts_the_endpoint(server, rows):
    sm = server.client("sagemaker")
    _endpoint(sm, "ie-end")
    _experiment(sm, "ie-end-exp", "ie-end", percent=30)
    _wait_status(sm, "ie-end-exp", "Running")
    assert "ShadowProductionVariants" in sm.describe_endpoint(EndpointName="ie-end")
    sm.update_inference_experiment(Name="ie-end-exp", Schedule={
        "EndTime": datetime.now(UTC) + timedelta(seconds=2)})
    d = _wait_status(sm, "ie-end-exp", "Completed")
    assert "CompletionTime" in d
    ep = _wait(sm, "ie-end")  # "After the test is complete, the endpoint reverts to the state it was in"
    assert ep["EndpointConfigName"] == "ie-end-cfg" and "ShadowProductionVariants" not in ep
    assert [e["Status"] for e in sm.list_inference_experiments(NameContains="ie-end")["InferenceExperiments"]] == [
        "Completed"]
    sm.delete_inference_experiment(Name="ie-end-exp")
    sm.delete_endpoint(EndpointName="ie-end")
