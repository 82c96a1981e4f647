"""CreateTransformJob with DataCaptureConfig (boto3, the Model Monitor batch example's request) over a real
built-in XGBoost model: manifests of the inputs and outputs under DestinationS3Uri/input|output/yyyy/mm/dd/hh/,
and with GenerateInferenceId an inference id and the job's start time appended to every output record."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.api.test_transform_api import _csv, _job, _wait, xgb  # noqa: F401  (module fixture)

pytestmark = pytest.mark.slow

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _keys(store, prefix: str) -> list[str]:
    return sorted(i.key for i in store.list("tbucket", prefix))


def test_create_transform_job_data_capture_writes_manifests_and_inference_ids(server, xgb):  # noqa: F811
    booster, X = xgb
    import xgboost

    store, sm = server.store(), server.client("sagemaker")
    store.put_bytes("tbucket", "capture-in/a.csv", _csv(X[:5]))
    store.put_bytes("tbucket", "capture-in/b.csv", _csv(X[5:8]))
    capture = {"DestinationS3Uri": "s3://tbucket/datacapture", "GenerateInferenceId": True}
    sm.create_transform_job(**_job("tx-capture", "tx-xgb", "capture-in/", DataCaptureConfig=capture,
                                   TransformOutput={"Accept": "text/csv"}))
    d = _wait(sm, "tx-capture")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["DataCaptureConfig"] == capture

    hour = datetime.fromtimestamp(d["TransformStartTime"].timestamp(), UTC)
    started = hour.strftime("%Y-%m-%dT%H:%M:%SZ")
    inputs = _keys(store, "datacapture/input/")
    outputs = _keys(store, "datacapture/output/")
    folder = hour.strftime("%Y/%m/%d/%H")
    assert len(inputs) == len(outputs) == 1
    assert re.fullmatch(rf"datacapture/input/{folder}/{UUID}\.json", inputs[0])
    assert re.fullmatch(rf"datacapture/output/{folder}/{UUID}\.json", outputs[0])
    assert json.loads(store.get_bytes("tbucket", inputs[0])) == [{"prefix": "s3://tbucket/capture-in/"},
                                                                  "a.csv", "b.csv"]
    assert json.loads(store.get_bytes("tbucket", outputs[0])) == [{"prefix": "s3://tbucket/out/tx-capture/"},
                                                                   "a.csv.out", "b.csv.out"]

    lines = store.get_bytes("tbucket", "out/tx-capture/a.csv.out").decode().splitlines()
    rows = [line.split(",") for line in lines]
    assert len(rows) == 5 and all(len(r) == 3 and re.fullmatch(UUID, r[1]) and r[2] == started for r in rows)
    assert len({r[1] for r in rows}) == 5  # one id per record
    expected = booster.predict(xgboost.DMatrix(np.asarray(X[:5], dtype=np.float32)))
    np.testing.assert_allclose([float(r[0]) for r in rows], expected, rtol=1e-4, atol=1e-6)


def test_create_transform_job_data_capture_without_inference_id_leaves_output_alone(server, xgb):  # noqa: F811
    store, sm = server.store(), server.client("sagemaker")
    _, X = xgb
    store.put_bytes("tbucket", "capture-plain/in.csv", _csv(X[:4]))
    sm.create_transform_job(**_job("tx-capture-plain", "tx-xgb", "capture-plain/in.csv",
                                   DataCaptureConfig={"DestinationS3Uri": "s3://tbucket/plain-capture/"}))
    d = _wait(sm, "tx-capture-plain")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    lines = store.get_bytes("tbucket", "out/tx-capture-plain/in.csv.out").decode().splitlines()
    assert len(lines) == 4 and all("," not in line for line in lines)
    (key,) = _keys(store, "plain-capture/input/")
    assert json.loads(store.get_bytes("tbucket", key)) == [{"prefix": "s3://tbucket/capture-plain/"}, "in.csv"]


def test_create_transform_job_bad_capture_destination_is_validation_error(server, xgb):  # noqa: F811
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.create_transform_job(**_job("tx-capture-bad", "tx-xgb", "capture-in/",
                                       DataCaptureConfig={"DestinationS3Uri": "s3://x/"}))
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "dataCaptureConfig.destinationS3Uri" in e.value.response["Error"]["Message"]


def test_sdk_v2_transformer_batch_data_capture_config_writes_manifests(server, xgb, monkeypatch):  # noqa: F811
    """The Model Monitor batch example's SDK v2 call: Transformer.transform(batch_data_capture_config=...)."""
    import boto3
    import sagemaker
    from sagemaker.inputs import BatchDataCaptureConfig
    from sagemaker.transformer import Transformer

    _, X = xgb
    store = server.store()
    store.put_bytes("tbucket", "sdk-capture-in/data.csv", _csv(X[:6]))
    creds = server.settings.credentials
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    boto = boto3.Session(aws_access_key_id=creds.access_key, aws_secret_access_key=creds.secret_key,
                         region_name="us-east-1")
    session = sagemaker.Session(boto_session=boto, sagemaker_client=server.client("sagemaker"),
                                default_bucket="tbucket")
    transformer = Transformer(model_name="tx-xgb", instance_count=1, instance_type="ml.m5.large",
                              output_path="s3://tbucket/out/sdk-capture", accept="text/csv", assemble_with="Line",
                              sagemaker_session=session)
    transformer.transform(data="s3://tbucket/sdk-capture-in/", content_type="text/csv", split_type="Line",
                          job_name="tx-sdk-capture", wait=False, logs=False,
                          batch_data_capture_config=BatchDataCaptureConfig(
                              destination_s3_uri="s3://tbucket/sdk-capture", generate_inference_id=True))
    d = _wait(server.client("sagemaker"), "tx-sdk-capture")
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    assert d["DataCaptureConfig"]["DestinationS3Uri"] == "s3://tbucket/sdk-capture"
    (key,) = _keys(store, "sdk-capture/output/")
    assert json.loads(store.get_bytes("tbucket", key)) == [{"prefix": "s3://tbucket/out/sdk-capture/"},
                                                            "data.csv.out"]
    lines = store.get_bytes("tbucket", "out/sdk-capture/data.csv.out").decode().splitlines()
    assert len(lines) == 6 and all(re.fullmatch(rf"[0-9.e-]+,{UUID},\S+Z", line) for line in lines)
