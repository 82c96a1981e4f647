"""Real jobs (agent processes, built-in XGBoost, script mode) through boto3 against the in-process server.

The object store is a file:// store here; `opensage up` with SeaweedFS is covered in tests/e2e.
"""

from __future__ import annotations

import io
import tarfile
import time

import numpy as np
import pytest

from tests.conftest import training_request, wait_for_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    rng = np.random.default_rng(1)
    X = rng.random((300, 4))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    csv = "\n".join(",".join([str(a)] + [f"{v:.4f}" for v in row]) for a, row in zip(y, X, strict=True))
    store.put_bytes("bucket1", "data/train/part-1.csv", csv.encode())
    bad = csv.split("\n")
    bad[16] = "1,0.5,abc,0.2,0.1"
    store.put_bytes("bucket1", "bad/train/data.csv", "\n".join(bad).encode())
    return store


def test_builtin_xgboost_job_completes_with_metrics_and_model(server, data):
    sm = server.client("sagemaker")
    sm.create_training_job(**training_request("run-xgb"))
    d = wait_for_status(sm, "run-xgb")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert any(m["MetricName"] == "train:logloss" for m in d["FinalMetricDataList"])
    assert d["ModelArtifacts"]["S3ModelArtifacts"] == "s3://bucket1/out/run-xgb/output/model.tar.gz"
    blob = data.get_bytes("bucket1", "out/run-xgb/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert "xgboost-model" in tar.getnames()
    assert d["TrainingTimeInSeconds"] >= 1


def test_create_training_job_empty_input_prefix_is_validation_exception(server, data):
    """SageMaker lists the input at Create: an empty prefix never becomes a job."""
    from botocore.exceptions import ClientError

    sm = server.client("sagemaker")
    req = training_request("run-nochan")
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://bucket1/nothing-here/"
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["Error"]["Message"] == (
        'No S3 objects found under S3 URL "s3://bucket1/nothing-here/" given in input data source. Please '
        'ensure that the bucket exists in the selected region (us-east-1), that objects exist under that S3 '
        'prefix, and that the role "arn:aws:iam::000000000000:role/SageMakerRole" has "s3:ListBucket" '
        'permissions on bucket "bucket1".')


def test_malformed_csv_fails_naming_file_and_line(server, data):
    sm = server.client("sagemaker")
    req = training_request("run-badcsv")
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://bucket1/bad/train"
    sm.create_training_job(**req)
    d = wait_for_status(sm, "run-badcsv")
    assert d["TrainingJobStatus"] == "Failed"
    assert "data.csv" in d["FailureReason"] and "17" in d["FailureReason"]


def test_unknown_hyperparameter_fails_naming_it(server, data):
    sm = server.client("sagemaker")
    req = training_request("run-badhp", HyperParameters={"num_round": "5", "nmu_trees": "3"})
    sm.create_training_job(**req)
    d = wait_for_status(sm, "run-badhp")
    assert d["TrainingJobStatus"] == "Failed"
    assert "nmu_trees" in d["FailureReason"]


def test_out_of_range_hyperparameter_fails_naming_it(server, data):
    sm = server.client("sagemaker")
    sm.create_training_job(**training_request("run-eta", HyperParameters={"num_round": "5", "eta": "7"}))
    d = wait_for_status(sm, "run-eta")
    assert d["TrainingJobStatus"] == "Failed"
    assert "eta" in d["FailureReason"]


def test_max_runtime_exceeded_stops_job(server, data):
    sm = server.client("sagemaker")
    req = training_request("run-maxrt", HyperParameters={"num_round": "100000", "max_depth": "8"},
                           StoppingCondition={"MaxRuntimeInSeconds": 2})
    sm.create_training_job(**req)
    d = wait_for_status(sm, "run-maxrt", timeout=60)
    assert d["TrainingJobStatus"] == "Stopped"
    assert d["SecondaryStatus"] == "MaxRuntimeExceeded"


def test_stop_running_job_stops_process(server, data):
    sm = server.client("sagemaker")
    sm.create_training_job(**training_request("run-stop", HyperParameters={"num_round": "100000"}))
    deadline = time.time() + 30
    while sm.describe_training_job(TrainingJobName="run-stop")["SecondaryStatus"] != "Training":
        assert time.time() < deadline
        time.sleep(0.2)
    sm.stop_training_job(TrainingJobName="run-stop")
    d = wait_for_status(sm, "run-stop", timeout=60)
    assert d["TrainingJobStatus"] == "Stopped"
    assert not server.platform.training.executor.is_running(
        server.platform.deps.resources.get("training-job", "run-stop").state["_handles"][0])
