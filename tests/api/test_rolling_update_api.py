"""UpdateEndpoint deployment options AWS's deployment-guardrails examples use: RollingUpdatePolicy (batch by
batch, with rollback on alarms), RetainDeploymentConfig, PendingDeploymentSummary and LastDeploymentConfig;
through boto3 against the in-process control plane with real model servers."""

from __future__ import annotations

import threading
import time

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
    for name, rounds in (("roll-model-a", 5), ("roll-model-b", 20)):
        blob, X, _, _ = breast_cancer_xgb(rounds)
        store.put_bytes("bucket1", f"models/{name}/model.tar.gz", blob)
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGB_IMAGE, "ModelDataUrl": f"s3://bucket1/models/{name}/model.tar.gz"})
    return X


def _config(sm, name: str, model: str, count: int, variant: str = "AllTraffic", **extra) -> None:
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": variant, "ModelName": model, "InitialInstanceCount": count, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": 1.0, **extra}])


def _endpoint(sm, name: str, config: str) -> None:
    sm.create_endpoint(EndpointName=name, EndpointConfigName=config)
    d = _wait(sm, name)
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")


def _score(rt, endpoint: str, body: str) -> bytes:
    return rt.invoke_endpoint(EndpointName=endpoint, ContentType="text/csv", Body=body)["Body"].read()


def _live_replicas(server, endpoint: str) -> int:
    route = server.platform.router.get(endpoint)
    return sum(len(v.replicas) for v in route.variants)


def _rolling(wait: int = 1, batch: int = 1, **extra) -> dict:
    return {"RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": batch},
                                    "WaitIntervalInSeconds": wait, **extra}}


def test_update_endpoint_rolling_replaces_the_fleet_batch_by_batch_without_failed_requests(server, rows):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _config(sm, "roll-1", "roll-model-a", 2)
    _config(sm, "roll-2", "roll-model-b", 2)
    _endpoint(sm, "roll-ep", "roll-1")
    body = _csv(rows[:1])
    old = _score(rt, "roll-ep", body)
    failures, answers, stop = [], set(), threading.Event()

    def load() -> None:
        client = server.client("sagemaker-runtime")
        while not stop.is_set():
            try:
                answers.add(_score(client, "roll-ep", body))
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        sm.update_endpoint(EndpointName="roll-ep", EndpointConfigName="roll-2", DeploymentConfig=_rolling(wait=2))
        routed, pending, mixed = set(), [], False
        deadline = time.time() + 120
        while time.time() < deadline:
            d = sm.describe_endpoint(EndpointName="roll-ep")
            if d["EndpointStatus"] != "Updating":
                break
            routed.add(_live_replicas(server, "roll-ep"))
            if "PendingDeploymentSummary" in d:
                pending.append(d["PendingDeploymentSummary"])
            mixed |= len(answers) == 2
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "roll-2", d.get("FailureReason")
    assert failures == []
    assert mixed, "between batches old and new instances both answer"
    assert max(routed) <= 3, "one batch (1 instance) above the fleet's size at most"
    assert old in answers and len(answers) == 2
    assert _score(rt, "roll-ep", body) != old
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    assert "PendingDeploymentSummary" not in d
    assert d["LastDeploymentConfig"]["RollingUpdatePolicy"]["WaitIntervalInSeconds"] == 2

    assert pending and pending[0]["EndpointConfigName"] == "roll-2" and "StartTime" in pending[0]
    statuses = {s["Status"] for p in pending for v in p.get("ProductionVariants", []) for s in v["VariantStatus"]}
    assert {"Creating", "Baking"} <= statuses
    variants = [v for p in pending for v in p.get("ProductionVariants", [])]
    assert {(v["VariantName"], v["DesiredInstanceCount"], v["InstanceType"]) for v in variants} == {
        ("AllTraffic", 2, "ml.m5.large")}
    assert max(v["CurrentInstanceCount"] for v in variants) >= 1
    sm.delete_endpoint(EndpointName="roll-ep")


def test_update_endpoint_rolling_rolls_back_when_an_alarm_fires(server, rows):
    sm, rt, cw = (server.client(s) for s in ("sagemaker", "sagemaker-runtime", "cloudwatch"))
    _config(sm, "rollrb-1", "roll-model-a", 2)
    _config(sm, "rollrb-2", "roll-model-b", 2)
    _endpoint(sm, "rollrb-ep", "rollrb-1")
    body = _csv(rows[:1])
    old = _score(rt, "rollrb-ep", body)
    cw.put_metric_alarm(AlarmName="rollrb-errors", Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors",
                        Dimensions=[{"Name": "EndpointName", "Value": "rollrb-ep"},
                                    {"Name": "VariantName", "Value": "AllTraffic"}],
                        Statistic="Sum", Period=60, EvaluationPeriods=1, Threshold=1,
                        ComparisonOperator="GreaterThanOrEqualToThreshold", TreatMissingData="notBreaching")
    sm.update_endpoint(EndpointName="rollrb-ep", EndpointConfigName="rollrb-2", DeploymentConfig={
        **_rolling(wait=60, RollbackMaximumBatchSize={"Type": "INSTANCE_COUNT", "Value": 1}),
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "rollrb-errors"}]}})
    deadline = time.time() + 60  # the first batch is in service and baking: some answers come from it
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName="rollrb-ep")
        variants = (d.get("PendingDeploymentSummary") or {}).get("ProductionVariants") or []
        if any(s["Status"] == "Baking" for v in variants for s in v["VariantStatus"]):
            break
        time.sleep(0.1)
    assert {_score(rt, "rollrb-ep", body) for _ in range(30)} != {old}

    cw.set_alarm_state(AlarmName="rollrb-errors", StateValue="ALARM", StateReason="testing the rollback")
    statuses = set()
    deadline = time.time() + 90
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName="rollrb-ep")
        statuses.add(d["EndpointStatus"])
        if d["EndpointStatus"] == "InService":
            break
        time.sleep(0.1)
    assert "RollingBack" in statuses
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "rollrb-1"
    assert "rollrb-errors" in d["FailureReason"]
    assert {_score(rt, "rollrb-ep", body) for _ in range(20)} == {old}
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    sm.delete_endpoint(EndpointName="rollrb-ep")


def test_update_endpoint_rolling_refuses_what_sagemaker_refuses(server, rows):
    sm = server.client("sagemaker")
    _config(sm, "rollv-1", "roll-model-a", 1)
    _config(sm, "rollv-2", "roll-model-b", 2)
    _config(sm, "rollv-other", "roll-model-b", 2, variant="Other")
    _endpoint(sm, "rollv-ep", "rollv-1")

    def refused(config: str, deployment: dict) -> str:
        with pytest.raises(ClientError) as err:
            sm.update_endpoint(EndpointName="rollv-ep", EndpointConfigName=config, DeploymentConfig=deployment)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        return err.value.response["Error"]["Message"]

    assert "between 5% and 50%" in refused("rollv-1", _rolling())  # 1 instance: a batch of 1 is 100%
    assert "between 5% and 50%" in refused("rollv-2", _rolling(batch=2))
    assert "same variant name" in refused("rollv-other", _rolling())
    both = {**_rolling(), "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
        "Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}}}
    assert "not both" in refused("rollv-2", both)
    sm.create_endpoint_config(EndpointConfigName="rollv-sls", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "roll-model-b",
         "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1}}])
    assert "serverless" in refused("rollv-sls", _rolling())
    assert sm.describe_endpoint(EndpointName="rollv-ep")["EndpointStatus"] == "InService"
    sm.delete_endpoint(EndpointName="rollv-ep")


def test_update_endpoint_retain_deployment_config_reuses_the_last_canary(server, rows):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _config(sm, "retain-1", "roll-model-a", 1)
    _config(sm, "retain-2", "roll-model-b", 1)
    _endpoint(sm, "retain-ep", "retain-1")
    canary = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
        "Type": "CANARY", "WaitIntervalInSeconds": 3, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}}}}
    sm.update_endpoint(EndpointName="retain-ep", EndpointConfigName="retain-2", DeploymentConfig=canary)
    d = _wait(sm, "retain-ep")
    assert d["EndpointStatus"] == "InService" and d["LastDeploymentConfig"] == canary

    body = _csv(rows[:1])
    before = _score(rt, "retain-ep", body)
    sm.update_endpoint(EndpointName="retain-ep", EndpointConfigName="retain-1", RetainDeploymentConfig=True)
    seen, shifting = set(), False
    deadline = time.time() + 60
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName="retain-ep")
        if d["EndpointStatus"] != "Updating":
            break
        variants = (d.get("PendingDeploymentSummary") or {}).get("ProductionVariants") or []
        shifting |= any(s["Status"] == "ActivatingTraffic" for v in variants for s in v["VariantStatus"])
        seen.add(_score(rt, "retain-ep", body))
    assert shifting and len(seen) == 2, "the retained canary shifts part of the traffic first"
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "retain-1"
    assert d["LastDeploymentConfig"] == canary
    assert _score(rt, "retain-ep", body) != before
    sm.delete_endpoint(EndpointName="retain-ep")
