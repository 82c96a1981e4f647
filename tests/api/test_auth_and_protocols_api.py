"""SigV4 is enforced on every request; STS and CloudWatch Logs speak their own protocols."""

from __future__ import annotations

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from opensage.executors.fake import FakeRun
from tests.conftest import training_request, wait_for_status


def test_request_with_wrong_secret_is_refused_403(fake_server):
    sm = boto3.client("sagemaker", endpoint_url=fake_server.url, region_name="us-east-1",
                      aws_access_key_id=fake_server.settings.credentials.access_key,
                      aws_secret_access_key="wrong-secret", config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        sm.list_training_jobs()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"


def test_request_with_unknown_access_key_is_refused(fake_server):
    sm = boto3.client("sagemaker", endpoint_url=fake_server.url, region_name="us-east-1",
                      aws_access_key_id="AKIAUNKNOWN", aws_secret_access_key="x",
                      config=Config(retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        sm.list_training_jobs()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_unsigned_request_is_refused_403(fake_server):
    r = httpx.post(fake_server.url + "/", headers={"X-Amz-Target": "SageMaker.ListTrainingJobs",
                                                  "Content-Type": "application/x-amz-json-1.1"}, content=b"{}")
    assert r.status_code == 403
    assert r.json()["__type"] == "MissingAuthenticationTokenException"


def test_tampered_body_is_refused(fake_server):
    # Sign one body, send another: the payload hash no longer matches.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = Credentials(fake_server.settings.credentials.access_key, fake_server.settings.credentials.secret_key)
    req = AWSRequest("POST", fake_server.url + "/", data=b"{}", headers={
        "X-Amz-Target": "SageMaker.ListTrainingJobs", "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(creds, "sagemaker", "us-east-1").add_auth(req)
    headers = dict(req.headers.items())
    r = httpx.post(fake_server.url + "/", headers=headers, content=b'{"MaxResults": 5}')
    assert r.status_code == 403
    ok = httpx.post(fake_server.url + "/", headers=headers, content=b"{}")
    assert ok.status_code == 200


def test_sts_get_caller_identity_answers_account(fake_server):
    sts = fake_server.client("sts")
    ident = sts.get_caller_identity()
    assert ident["Account"] == "000000000000"
    assert ident["Arn"] == "arn:aws:sts::000000000000:assumed-role/SageMakerRole/opensage"


def test_logs_get_log_events_pages_until_an_empty_page(fake_server):
    fake_server.platform.training.executor.script(
        "logs-job", FakeRun(log_lines=[f"line {i}" for i in range(25)]))
    sm = fake_server.client("sagemaker")
    sm.create_training_job(**training_request("logs-job"))
    wait_for_status(sm, "logs-job")
    logs = fake_server.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                        logStreamNamePrefix="logs-job/", orderBy="LogStreamName")["logStreams"]
    assert len(streams) == 1 and streams[0]["logStreamName"].startswith("logs-job/algo-1-")
    got, token = [], None
    for _ in range(10):
        kw = {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamName": streams[0]["logStreamName"],
              "startFromHead": True, "limit": 10}
        if token:
            kw["nextToken"] = token
        page = logs.get_log_events(**kw)
        if not page["events"]:
            assert page["nextForwardToken"] == token
            break
        got += [e["message"] for e in page["events"]]
        assert all("ingestionTime" in e and "timestamp" in e for e in page["events"])
        token = page["nextForwardToken"]
    assert got == [f"line {i}" for i in range(25)]
    filtered = logs.filter_log_events(logGroupName="/aws/sagemaker/TrainingJobs", filterPattern="line 2")
    assert [e["message"] for e in filtered["events"]] == ["line 2"] + [f"line {i}" for i in range(20, 25)]


def test_logs_missing_group_is_resource_not_found(fake_server):
    logs = fake_server.client("logs")
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.describe_log_streams(logGroupName="/aws/sagemaker/Nothing")


def test_metric_definitions_reach_final_metric_data_list(fake_server):
    fake_server.platform.training.executor.script("metrics-job", FakeRun(log_lines=[
        "epoch 1 loss=0.9", "[0]\ttrain-rmse:0.5\tvalidation-rmse:0.6", "epoch 2 loss=0.4"]))
    sm = fake_server.client("sagemaker")
    req = training_request("metrics-job")
    req["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]
    sm.create_training_job(**req)
    d = wait_for_status(sm, "metrics-job")
    final = {m["MetricName"]: m["Value"] for m in d["FinalMetricDataList"]}
    assert final["loss"] == pytest.approx(0.4)
    assert final["validation:rmse"] == pytest.approx(0.6)  # built-in XGBoost regex (#011 rendering)
    assert final["train:rmse"] == pytest.approx(0.5)
