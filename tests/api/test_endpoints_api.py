"""Endpoints through boto3: real model servers behind the in-process control plane (file:// object store)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import breast_cancer_xgb, tar_gz

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    sm = server.client("sagemaker")
    rows = None
    for name, rounds in (("ep-model-a", 5), ("ep-model-b", 20)):
        blob, rows, _, _ = breast_cancer_xgb(rounds)
        store.put_bytes("bucket1", f"models/{name}/model.tar.gz", blob)
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
            "Image": XGB_IMAGE, "ModelDataUrl": f"s3://bucket1/models/{name}/model.tar.gz"})
    return rows


def _config(sm, name: str, variants: list[tuple[str, str, float, int]]) -> None:
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": v, "ModelName": m, "InitialVariantWeight": w, "InitialInstanceCount": n,
         "InstanceType": "ml.m5.large"} for v, m, w, n in variants])


def _wait(sm, name: str, timeout: float = 90) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] not in ("Creating", "Updating"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"endpoint {name} still {d['EndpointStatus']}")


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)


def test_create_endpoint_invoke_csv_returns_one_score_per_line(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _config(sm, "ep-basic-cfg", [("AllTraffic", "ep-model-a", 1.0, 1)])
    arn = sm.create_endpoint(EndpointName="ep-Basic", EndpointConfigName="ep-basic-cfg")["EndpointArn"]
    assert arn.endswith(":endpoint/ep-basic")
    d = _wait(sm, "ep-Basic")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    pv = d["ProductionVariants"][0]
    assert (pv["VariantName"], pv["CurrentInstanceCount"], pv["CurrentWeight"]) == ("AllTraffic", 1, 1.0)
    r = rt.invoke_endpoint(EndpointName="ep-Basic", ContentType="text/csv", Body=_csv(models[:3]))
    scores = r["Body"].read().decode().strip().splitlines()
    assert len(scores) == 3 and all(0 <= float(s) <= 1 for s in scores)
    assert r["InvokedProductionVariant"] == "AllTraffic"
    assert r["ContentType"].startswith("text/csv")


def test_invoke_endpoint_bad_payload_is_model_error_424(server, models):
    rt = server.client("sagemaker-runtime")
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName="ep-Basic", ContentType="text/csv", Body="not,a,number\n")
    err = e.value.response
    assert err["Error"]["Code"] == "ModelError"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert err["OriginalStatusCode"] == 400
    assert "Received client error (400) from primary" in err["Error"]["Message"]


def test_invoke_missing_endpoint_is_validation_error(server):
    rt = server.client("sagemaker-runtime")
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName="nope", ContentType="text/csv", Body="1")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint nope of account" in str(e.value)


def test_two_variants_route_by_weight_and_target_variant(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _config(sm, "ep-ab-cfg", [("A", "ep-model-a", 1.0, 1), ("B", "ep-model-b", 3.0, 1)])
    sm.create_endpoint(EndpointName="ep-ab", EndpointConfigName="ep-ab-cfg")
    assert _wait(sm, "ep-ab")["EndpointStatus"] == "InService"
    seen = [rt.invoke_endpoint(EndpointName="ep-ab", ContentType="text/csv", Body=_csv(models[:1]))[
        "InvokedProductionVariant"] for _ in range(80)]
    assert 0.55 < seen.count("B") / len(seen) < 0.95
    only_a = {rt.invoke_endpoint(EndpointName="ep-ab", ContentType="text/csv", Body=_csv(models[:1]),
                                 TargetVariant="A")["InvokedProductionVariant"] for _ in range(10)}
    assert only_a == {"A"}
    sm.update_endpoint_weights_and_capacities(EndpointName="ep-ab", DesiredWeightsAndCapacities=[
        {"VariantName": "B", "DesiredWeight": 0.0}])
    assert _wait(sm, "ep-ab")["EndpointStatus"] == "InService"
    after = {rt.invoke_endpoint(EndpointName="ep-ab", ContentType="text/csv", Body=_csv(models[:1]))[
        "InvokedProductionVariant"] for _ in range(20)}
    assert after == {"A"}


def test_update_endpoint_under_load_has_zero_failed_requests(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _config(sm, "ep-upd-1", [("AllTraffic", "ep-model-a", 1.0, 1)])
    _config(sm, "ep-upd-2", [("AllTraffic", "ep-model-b", 1.0, 2)])
    sm.create_endpoint(EndpointName="ep-upd", EndpointConfigName="ep-upd-1")
    assert _wait(sm, "ep-upd")["EndpointStatus"] == "InService"
    body = _csv(models[:1])
    before = rt.invoke_endpoint(EndpointName="ep-upd", ContentType="text/csv", Body=body)["Body"].read()
    failures, ok, stop = [], [0], threading.Event()

    def load() -> None:
        client = server.client("sagemaker-runtime")
        while not stop.is_set():
            try:
                client.invoke_endpoint(EndpointName="ep-upd", ContentType="text/csv", Body=body)["Body"].read()
                ok[0] += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    sm.update_endpoint(EndpointName="ep-upd", EndpointConfigName="ep-upd-2")
    d = _wait(sm, "ep-upd")
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "ep-upd-2"
    assert failures == [] and ok[0] > 20
    after = rt.invoke_endpoint(EndpointName="ep-upd", ContentType="text/csv", Body=body)["Body"].read()
    assert after != before  # the new model answers
    assert d["ProductionVariants"][0]["CurrentInstanceCount"] == 2


def test_update_to_broken_model_keeps_old_fleet_serving(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    server.store().put_bytes("bucket1", "models/broken/model.tar.gz", tar_gz({}))
    sm.create_model(ModelName="ep-broken", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": "s3://bucket1/models/broken/model.tar.gz"})
    _config(sm, "ep-broken-cfg", [("AllTraffic", "ep-broken", 1.0, 1)])
    sm.update_endpoint(EndpointName="ep-Basic", EndpointConfigName="ep-broken-cfg")
    d = _wait(sm, "ep-Basic")
    assert d["EndpointStatus"] == "InService"
    assert d["EndpointConfigName"] == "ep-basic-cfg"
    assert "ping health check" in d["FailureReason"]
    r = rt.invoke_endpoint(EndpointName="ep-Basic", ContentType="text/csv", Body=_csv(models[:1]))
    assert r["Body"].read()


def test_delete_endpoint_then_describe_is_could_not_find(server, models):
    sm = server.client("sagemaker")
    sm.delete_endpoint(EndpointName="ep-ab")
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            sm.describe_endpoint(EndpointName="ep-ab")
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ValidationException"
            assert "Could not find endpoint" in str(e)
            return
        time.sleep(0.2)
    raise AssertionError("endpoint was not deleted")


def test_update_endpoint_canary_shifts_part_of_traffic_then_all(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _config(sm, "ep-can-1", [("AllTraffic", "ep-model-a", 1.0, 1)])
    _config(sm, "ep-can-2", [("AllTraffic", "ep-model-b", 1.0, 1)])
    sm.create_endpoint(EndpointName="ep-can", EndpointConfigName="ep-can-1")
    assert _wait(sm, "ep-can")["EndpointStatus"] == "InService"
    body = _csv(models[:1])
    old = rt.invoke_endpoint(EndpointName="ep-can", ContentType="text/csv", Body=body)["Body"].read()
    sm.update_endpoint(EndpointName="ep-can", EndpointConfigName="ep-can-2", DeploymentConfig={
        "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
            "Type": "CANARY", "WaitIntervalInSeconds": 4, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50}}}})
    seen: set[bytes] = set()
    deadline = time.time() + 60
    while time.time() < deadline and len(seen) < 2:
        if sm.describe_endpoint(EndpointName="ep-can")["EndpointStatus"] != "Updating":
            break
        seen.add(rt.invoke_endpoint(EndpointName="ep-can", ContentType="text/csv", Body=body)["Body"].read())
    assert len(seen) == 2, "during the canary both fleets should answer"
    d = _wait(sm, "ep-can")
    assert d["EndpointStatus"] == "InService" and d["EndpointConfigName"] == "ep-can-2"
    after = {rt.invoke_endpoint(EndpointName="ep-can", ContentType="text/csv", Body=body)["Body"].read()
             for _ in range(10)}
    assert after == seen - {old}


def test_dead_replica_is_replaced_and_endpoint_keeps_serving(server, models):
    import os
    import signal

    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _config(sm, "ep-heal-cfg", [("AllTraffic", "ep-model-a", 1.0, 1)])
    sm.create_endpoint(EndpointName="ep-heal", EndpointConfigName="ep-heal-cfg")
    assert _wait(sm, "ep-heal")["EndpointStatus"] == "InService"
    row = server.platform.deps.resources.get("endpoint", "ep-heal")
    pid = row.state["_fleet"]["variants"][0]["replicas"][0]["pid"]
    os.killpg(pid, signal.SIGKILL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            rt.invoke_endpoint(EndpointName="ep-heal", ContentType="text/csv", Body=_csv(models[:1]))
            break
        except ClientError:
            time.sleep(0.3)
    else:
        raise AssertionError("the endpoint never recovered")
    new_pid = server.platform.deps.resources.get("endpoint", "ep-heal").state["_fleet"]["variants"][0][
        "replicas"][0]["pid"]
    assert new_pid != pid


def test_oversized_payload_and_unknown_variant_are_validation_errors(server, models):
    rt = server.client("sagemaker-runtime")
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName="ep-heal", ContentType="text/csv", Body=b"1" * (6 * 1024 * 1024 + 1))
    assert e.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(ClientError) as e:
        rt.invoke_endpoint(EndpointName="ep-heal", ContentType="text/csv", Body=_csv(models[:1]),
                           TargetVariant="Nope")
    assert e.value.response["Error"]["Code"] == "ValidationError"
    assert "Nope" in str(e.value)


def test_data_capture_writes_sampled_pairs_in_capture_format(server, models):
    import json

    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    sm.create_endpoint_config(EndpointConfigName="ep-cap-cfg", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "ep-model-a", "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}], DataCaptureConfig={
        "EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": "s3://bucket1/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]})
    sm.create_endpoint(EndpointName="ep-cap", EndpointConfigName="ep-cap-cfg")
    assert _wait(sm, "ep-cap")["EndpointStatus"] == "InService"
    body = _csv(models[:1])
    for i in range(3):
        rt.invoke_endpoint(EndpointName="ep-cap", ContentType="text/csv", Body=body, InferenceId=f"id-{i}")
    server.platform.capture.flush()
    store = server.store()
    keys = [o.key for o in store.list("bucket1", "capture/ep-cap/AllTraffic/")]
    assert keys and all(k.endswith(".jsonl") for k in keys)
    assert keys[0].count("/") == 7  # capture/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>
    lines = [json.loads(line) for k in keys for line in store.get_bytes("bucket1", k).decode().splitlines()]
    assert [r["eventMetadata"]["inferenceId"] for r in lines] == ["id-0", "id-1", "id-2"]
    first = lines[0]["captureData"]
    assert first["endpointInput"] == {"observedContentType": "text/csv", "mode": "INPUT", "data": body,
                                      "encoding": "CSV"}
    assert first["endpointOutput"]["mode"] == "OUTPUT" and float(first["endpointOutput"]["data"]) >= 0
    assert lines[0]["eventVersion"] == "0"


def test_update_endpoint_weights_and_capacities_duplicate_variant_is_validation_error(server, models):
    sm = server.client("sagemaker")
    _config(sm, "ep-dup-cfg", [("A", "ep-model-a", 1.0, 1), ("B", "ep-model-a", 1.0, 1)])
    sm.create_endpoint(EndpointName="ep-dup", EndpointConfigName="ep-dup-cfg")
    assert _wait(sm, "ep-dup")["EndpointStatus"] == "InService"
    with pytest.raises(ClientError) as e:
        sm.update_endpoint_weights_and_capacities(EndpointName="ep-dup", DesiredWeightsAndCapacities=[
            {"VariantName": "A", "DesiredWeight": 0.0}, {"VariantName": "A", "DesiredWeight": 1.0}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "[A]" in e.value.response["Error"]["Message"]
    d = sm.describe_endpoint(EndpointName="ep-dup")
    assert d["EndpointStatus"] == "InService"
    assert [v["CurrentWeight"] for v in d["ProductionVariants"]] == [1.0, 1.0]
    sm.delete_endpoint(EndpointName="ep-dup")


def test_update_endpoint_weights_and_capacities_while_creating_is_in_progress_error(server, models):
    sm = server.client("sagemaker")
    _config(sm, "ep-busy-cfg", [("AllTraffic", "ep-model-a", 1.0, 1)])
    arn = sm.create_endpoint(EndpointName="ep-busy", EndpointConfigName="ep-busy-cfg")["EndpointArn"]
    with pytest.raises(ClientError) as e:  # SageMaker's answer while the endpoint is Creating / Updating
        sm.update_endpoint_weights_and_capacities(EndpointName="ep-busy", DesiredWeightsAndCapacities=[
            {"VariantName": "AllTraffic", "DesiredInstanceCount": 2}])
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["Error"]["Message"] == f'Cannot update in-progress endpoint "{arn}".'
    assert _wait(sm, "ep-busy")["EndpointStatus"] == "InService"
    sm.delete_endpoint(EndpointName="ep-busy")


def test_create_endpoint_model_data_missing_or_not_an_archive_fails_with_sagemakers_words(server, models):
    sm = server.client("sagemaker")
    server.store().put_bytes("bucket1", "models/not-a-tar/model.tar.gz", b"this is not gzip")
    for name, url in (("ep-missing-data", "s3://bucket1/models/nothing-here/model.tar.gz"),
                      ("ep-bad-archive", "s3://bucket1/models/not-a-tar/model.tar.gz")):
        sm.create_model(ModelName=name, ExecutionRoleArn=ROLE,
                        PrimaryContainer={"Image": XGB_IMAGE, "ModelDataUrl": url})
        _config(sm, f"{name}-cfg", [("AllTraffic", name, 1.0, 1)])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-cfg")
    missing, bad = _wait(sm, "ep-missing-data"), _wait(sm, "ep-bad-archive")
    assert missing["EndpointStatus"] == bad["EndpointStatus"] == "Failed"
    assert missing["FailureReason"] == "Could not find model data at s3://bucket1/models/nothing-here/model.tar.gz."
    assert bad["FailureReason"].startswith(
        "Failed to extract model data archive from URL s3://bucket1/models/not-a-tar/model.tar.gz: ")
