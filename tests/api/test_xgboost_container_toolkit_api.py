"""AWS's XGBoost script-mode example (``abalone.py``, the distributed-training notebook) as SDK v2's
``XGBoost(entry_point=..., framework_version="1.7-1")`` sends it, through the real runner: the script imports the container's own package,
``from sagemaker_xgboost_container import distributed`` and ``from sagemaker_xgboost_container.data_utils import
get_dmatrix``, which PyPI does not have (opensage/toolkits stands in for it). One host calls the training
function directly; two hosts go through ``distributed.rabit_run`` (the job's XGBoost collective)."""

from __future__ import annotations

import io
import pickle
import tarfile
import textwrap

import numpy as np
import pytest

from tests.conftest import ROLE, wait_for_status

pytestmark = pytest.mark.slow  # builds the sagemaker-xgboost:1.7-1 environment (once per home)

BUCKET = "abalone"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
ABALONE = textwrap.dedent('''
    import argparse
    import json
    import logging
    import os
    import pickle as pkl

    import xgboost as xgb
    from sagemaker_containers import entry_point
    from sagemaker_xgboost_container import distributed
    from sagemaker_xgboost_container.data_utils import get_dmatrix


    def _xgb_train(params, dtrain, evals, num_boost_round, model_dir, is_master):
        booster = xgb.train(params=params, dtrain=dtrain, evals=evals, num_boost_round=num_boost_round)
        if is_master:
            with open(os.path.join(model_dir, "xgboost-model"), "wb") as f:
                pkl.dump(booster, f)


    if __name__ == "__main__":
        parser = argparse.ArgumentParser()
        parser.add_argument("--max_depth", type=int)
        parser.add_argument("--eta", type=float)
        parser.add_argument("--objective", type=str)
        parser.add_argument("--num_round", type=int)
        parser.add_argument("--model_dir", type=str, default=os.environ.get("SM_MODEL_DIR"))
        parser.add_argument("--train", type=str, default=os.environ.get("SM_CHANNEL_TRAIN"))
        parser.add_argument("--validation", type=str, default=os.environ.get("SM_CHANNEL_VALIDATION"))
        parser.add_argument("--sm_hosts", type=str, default=os.environ.get("SM_HOSTS"))
        parser.add_argument("--sm_current_host", type=str, default=os.environ.get("SM_CURRENT_HOST"))
        args, _ = parser.parse_known_args()
        sm_hosts = json.loads(args.sm_hosts)

        dtrain = get_dmatrix(args.train, "libsvm")
        dval = get_dmatrix(args.validation, "libsvm")
        watchlist = [(dtrain, "train"), (dval, "validation")] if dval is not None else [(dtrain, "train")]
        train_hp = {"max_depth": args.max_depth, "eta": args.eta, "objective": args.objective}
        xgb_train_args = dict(params=train_hp, dtrain=dtrain, evals=watchlist, num_boost_round=args.num_round,
                              model_dir=args.model_dir)
        if len(sm_hosts) > 1:
            entry_point._wait_hostname_resolution()
            distributed.rabit_run(exec_fun=_xgb_train, args=xgb_train_args, include_in_training=(dtrain is not None),
                                  hosts=sm_hosts, current_host=args.sm_current_host, update_rabit_args=True)
        elif dtrain:
            xgb_train_args["is_master"] = True
            _xgb_train(**xgb_train_args)
        else:
            raise ValueError("Training channel must have data to train model.")


    def model_fn(model_dir):
        with open(os.path.join(model_dir, "xgboost-model"), "rb") as f:
            return pkl.load(f)
''')


def _libsvm(X: np.ndarray, y: np.ndarray) -> bytes:
    return "".join(f"{t:g} " + " ".join(f"{i + 1}:{v:.5g}" for i, v in enumerate(row)) + "\n"
                   for t, row in zip(y, X, strict=True)).encode()


@pytest.fixture(scope="module")
def data(server):
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    store = server.store()
    store.ensure_bucket(BUCKET)
    store.put_bytes(BUCKET, "data/train/abalone.train", _libsvm(X[:300], y[:300]))
    store.put_bytes(BUCKET, "data/validation/abalone.validation", _libsvm(X[300:], y[300:]))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("abalone.py")
        info.size = len(ABALONE.encode())
        tar.addfile(info, io.BytesIO(ABALONE.encode()))
    store.put_bytes(BUCKET, "code/sourcedir.tar.gz", buf.getvalue())
    return store


def _request(name: str, instance_count: int) -> dict:
    """What SDK v2's ``XGBoost(entry_point="abalone.py", framework_version="1.7-1").fit(...)`` sends, with the
    source as a ``code`` channel: this in-process platform's store is file://, which the job's boto3 cannot
    download sagemaker_submit_directory from (tests/e2e/test_xgboost_container_toolkit_sdk.py runs the SDK)."""
    channel = [{"ChannelName": c, "ContentType": "text/libsvm", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{p}", "S3DataDistributionType": "FullyReplicated"}}}
        for c, p in (("train", "data/train"), ("validation", "data/validation"), ("code", "code/"))]
    return {
        "TrainingJobName": name, "RoleArn": ROLE,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        "HyperParameters": {"max_depth": "3", "eta": "0.2", "objective": '"reg:squarederror"', "num_round": "20",
                            "sagemaker_program": '"abalone.py"',
                            "sagemaker_submit_directory": '"/opt/ml/input/data/code/sourcedir.tar.gz"'},
        "InputDataConfig": channel,
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": instance_count, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }


def _booster(store, name: str):
    blob = store.get_bytes(BUCKET, f"out/{name}/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return pickle.loads(tar.extractfile("xgboost-model").read())  # noqa: S301 - this test's own job


def test_create_training_job_abalone_script_imports_container_toolkit_trains(server, data):
    sm = server.client("sagemaker")
    sm.create_training_job(**_request("abalone-1host", 1))
    d = wait_for_status(sm, "abalone-1host", timeout=600)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert len(_booster(data, "abalone-1host").get_dump()) == 20


def test_create_training_job_abalone_script_two_hosts_rabit_run_trains(server, data):
    sm = server.client("sagemaker")
    sm.create_training_job(**_request("abalone-2host", 2))
    d = wait_for_status(sm, "abalone-2host", timeout=600)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert len(_booster(data, "abalone-2host").get_dump()) == 20
