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
    # The agent writes its result (Stopped) just before it exits: allow it the moment in between.
    handle = server.platform.deps.resources.get("training-job", "run-stop").state["_handles"][0]
    deadline = time.time() + 15
    while server.platform.training.executor.is_running(handle):
        assert time.time() < deadline, "the stopped job's agent is still running"
        time.sleep(0.2)


# ------------------------------------------------------------------------------------------ environments
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
XGB_17_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"

TOOLKIT_SCRIPT = '''
import os, sys
import sagemaker_containers
from sagemaker_training import environment
import joblib, numpy as np, sklearn
from sklearn.linear_model import LogisticRegression

env = environment.Environment()
legacy = sagemaker_containers.training_env()
assert legacy.model_dir == env.model_dir, (legacy.model_dir, env.model_dir)
train = env.channel_input_dirs["train"]
data = np.loadtxt(os.path.join(train, sorted(os.listdir(train))[0]), delimiter=",")
model = LogisticRegression().fit(data[:, 1:], data[:, 0])
joblib.dump(model, os.path.join(env.model_dir, "model.joblib"))
open(os.path.join(env.model_dir, "versions.txt"), "w").write(sklearn.__version__)
print("trained with scikit-learn", sklearn.__version__, "in", sys.prefix)
'''

XGB_SCRIPT = '''
import argparse, os
import numpy as np, xgboost as xgb
parser = argparse.ArgumentParser()
parser.add_argument("--num_round", type=int, default=3)
args, _ = parser.parse_known_args()
train = os.environ["SM_CHANNEL_TRAIN"]
data = np.loadtxt(os.path.join(train, sorted(os.listdir(train))[0]), delimiter=",")
booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(data[:, 1:], label=data[:, 0]), args.num_round)
booster.save_model(os.path.join(os.environ["SM_MODEL_DIR"], "xgboost-model"))
open(os.path.join(os.environ["SM_MODEL_DIR"], "versions.txt"), "w").write(xgb.__version__)
print("xgboost", xgb.__version__)
'''


def _sourcedir(store, key: str, script: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        body = script.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    store.put_bytes("bucket1", key, buf.getvalue())
    return f"s3://bucket1/{key}"


def _model_file(store, job: str, name: str) -> str:
    blob = store.get_bytes("bucket1", f"out/{job}/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read().decode()


def _script_request(name: str, image: str, code_uri: str, extra: dict | None = None) -> dict:
    """Script mode with the source as a ``code`` channel: this in-process platform's store is file://, which
    the job's boto3 cannot download from (the e2e tests use SeaweedFS and s3:// sources)."""
    req = training_request(name)
    req["AlgorithmSpecification"]["TrainingImage"] = image
    req["InputDataConfig"].append({"ChannelName": "code", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": code_uri.rsplit("/", 1)[0] + "/"}}})
    req["HyperParameters"] = {"sagemaker_program": '"train.py"',
                              "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"',
                              **(extra or {})}
    return req


def test_create_training_job_sklearn_image_script_imports_toolkits_in_its_environment(server, data):
    """A script written for the sklearn 1.2-1 image (sagemaker_training + sagemaker_containers) trains in an
    environment with that image's scikit-learn, prepared while the job shows "Downloading"."""
    sm = server.client("sagemaker")
    code = _sourcedir(data, "code/sk/sourcedir.tar.gz", TOOLKIT_SCRIPT)
    sm.create_training_job(**_script_request("run-env-sk", SKLEARN_IMAGE, code))
    d = wait_for_status(sm, "run-env-sk", timeout=600)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert _model_file(data, "run-env-sk", "versions.txt").startswith("1.2.")
    messages = [t.get("StatusMessage") for t in d["SecondaryStatusTransitions"] if t["Status"] == "Downloading"]
    if messages != ["Downloading input data"]:  # the environment was built by this job, not found cached
        assert messages == ["Downloading the training image"]
    logs = server.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix="run-env-sk/")["logStreams"][0]["logStreamName"]
    text = "\n".join(e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"])
    assert "sagemaker-scikit-learn:1.2-1" in text and "trained with scikit-learn 1.2." in text


def test_create_training_job_xgboost_17_script_mode_runs_xgboost_17(server, data):
    sm = server.client("sagemaker")
    code = _sourcedir(data, "code/xgb/sourcedir.tar.gz", XGB_SCRIPT)
    sm.create_training_job(**_script_request("run-env-xgb", XGB_17_IMAGE, code, {"num_round": "3"}))
    d = wait_for_status(sm, "run-env-xgb", timeout=600)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert _model_file(data, "run-env-xgb", "versions.txt").startswith("1.7")


def test_create_training_job_environment_unbuildable_fails_naming_pull_command(server, data, monkeypatch):
    """Offline with no cached environment: the FailureReason names it and the command that builds it."""
    sm = server.client("sagemaker")
    monkeypatch.setenv("OPENSAGE_OFFLINE", "1")  # read by the agent process the executor starts
    monkeypatch.setenv("OPENSAGE_ENV_CACHE", str(server.settings.home / "empty-env-cache"))
    code = _sourcedir(data, "code/off/sourcedir.tar.gz", TOOLKIT_SCRIPT)
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.4-2-cpu-py3"
    sm.create_training_job(**_script_request("run-env-off", image, code))
    d = wait_for_status(sm, "run-env-off", timeout=300)
    assert d["TrainingJobStatus"] == "Failed"
    assert "sagemaker-scikit-learn:1.4-2" in d["FailureReason"]
    assert "`opensage pull sagemaker-scikit-learn:1.4-2`" in d["FailureReason"]


def test_create_training_job_builtin_xgboost_090_trains_with_xgboost_090(server, data):
    """Built-in XGBoost 0.90-2 runs in that version's environment: its model is a pickle xgboost 0.90 wrote."""
    sm = server.client("sagemaker")
    req = training_request("run-xgb090")
    req["AlgorithmSpecification"]["TrainingImage"] = (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:0.90-2-cpu-py3")
    sm.create_training_job(**req)
    d = wait_for_status(sm, "run-xgb090", timeout=600)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    blob = data.get_bytes("bucket1", "out/run-xgb090/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        model = tar.extractfile("xgboost-model").read()
    assert model[:1] == b"\x80"  # a pickle (0.90 pickles its Booster), not 3.x's UBJSON
    logs = server.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix="run-xgb090/")["logStreams"][0]["logStreamName"]
    text = "\n".join(e["message"] for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream, startFromHead=True)["events"])
    assert "sagemaker-xgboost:0.90-2" in text
