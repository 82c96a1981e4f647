"""Inference pipelines and multi-model endpoints through boto3, against the in-process control plane."""

from __future__ import annotations

import textwrap
import time

import numpy as np
import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import tar_gz, train_xgb, xgb_model_tar

pytestmark = pytest.mark.slow

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
SCALE = 0.5
SCALER = textwrap.dedent(f'''
    def model_fn(model_dir):
        return {SCALE}

    def predict_fn(data, model):
        return data * model
''')
SCALER_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}
BUCKET = "pmbucket"


def _predict(booster, rows: np.ndarray) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(rows.astype(np.float32)))


def _csv(rows: np.ndarray) -> str:
    return "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows)


@pytest.fixture(scope="module")
def artifacts(server):
    """Upload a scaler (script mode), two XGBoost models; returns (boosters, rows)."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = np.round(X, 4)
    boosters = {"small": train_xgb(X, y, 2), "big": train_xgb(X, y, 25)}
    store = server.store()
    store.ensure_bucket(BUCKET)
    store.put_bytes(BUCKET, "scaler/model.tar.gz", tar_gz({"code/inference.py": SCALER.encode()}))
    for name, booster in boosters.items():
        blob = xgb_model_tar(booster)
        store.put_bytes(BUCKET, f"xgb/{name}/model.tar.gz", blob)
        store.put_bytes(BUCKET, f"mme/{name}.tar.gz", blob)
    return boosters, X


def _pipeline_containers(hostnames: tuple[str, str] | None = None) -> list[dict]:
    containers = [
        {"Image": SKLEARN_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/scaler/model.tar.gz", "Environment": SCALER_ENV},
        {"Image": XGB_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/xgb/big/model.tar.gz"},
    ]
    for container, hostname in zip(containers, hostnames or (), strict=False):
        container["ContainerHostname"] = hostname
    return containers


def _deploy(sm, name: str, model: dict, timeout: float = 120) -> dict:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, **model)
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1,
         "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] != "Creating":
            assert d["EndpointStatus"] == "InService", d.get("FailureReason")
            return d
        time.sleep(0.2)
    raise AssertionError(f"endpoint {name} still Creating")


def _scores(body: bytes) -> np.ndarray:
    return np.array([float(v) for v in body.decode().split()])


def _validation_error(call) -> str:
    with pytest.raises(ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == "ValidationError", err.value.response
    return err.value.response["Error"]["Message"]


# ------------------------------------------------------------------------------------------ pipelines
def test_pipeline_endpoint_runs_containers_in_order(server, artifacts):
    boosters, X = artifacts
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    d = _deploy(sm, "pm-pipeline", {"Containers": _pipeline_containers()})
    images = [i["SpecifiedImage"] for i in d["ProductionVariants"][0]["DeployedImages"]]
    assert images == [SKLEARN_IMAGE, XGB_IMAGE]
    out = rt.invoke_endpoint(EndpointName="pm-pipeline", Body=_csv(X[:6]), ContentType="text/csv",
                             Accept="text/csv")
    assert out["ContentType"] == "text/csv"
    np.testing.assert_allclose(_scores(out["Body"].read()), _predict(boosters["big"], X[:6] * SCALE), rtol=1e-5)
    # Without the scaler the answer differs: the first container really ran.
    assert not np.allclose(_predict(boosters["big"], X[:6]), _predict(boosters["big"], X[:6] * SCALE))


def test_pipeline_direct_invocation_targets_one_container(server, artifacts):
    boosters, X = artifacts
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _deploy(sm, "pm-direct", {"Containers": _pipeline_containers(("scaler", "xgb")),
                              "InferenceExecutionConfig": {"Mode": "Direct"}})
    out = rt.invoke_endpoint(EndpointName="pm-direct", Body=_csv(X[:3]), ContentType="text/csv", Accept="text/csv",
                             TargetContainerHostname="xgb")
    np.testing.assert_allclose(_scores(out["Body"].read()), _predict(boosters["big"], X[:3]), rtol=1e-5)
    scaled = rt.invoke_endpoint(EndpointName="pm-direct", Body=_csv(X[:1]), ContentType="text/csv",
                                Accept="text/csv", TargetContainerHostname="scaler")["Body"].read().decode()
    np.testing.assert_allclose([float(v) for v in scaled.split(",")], X[0] * SCALE, rtol=1e-4)
    message = _validation_error(lambda: rt.invoke_endpoint(EndpointName="pm-direct", Body=_csv(X[:1]),
                                                           ContentType="text/csv"))
    assert "TargetContainerHostname" in message


def test_pipeline_batch_transform_writes_pipeline_predictions(server, artifacts):
    boosters, X = artifacts
    sm = server.client("sagemaker")
    sm.create_model(ModelName="pm-batch", ExecutionRoleArn=ROLE, Containers=_pipeline_containers())
    server.store().put_bytes(BUCKET, "batch-in/rows.csv", (_csv(X[:50]) + "\n").encode())
    sm.create_transform_job(
        TransformJobName="pm-batch", ModelName="pm-batch",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch-in"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/batch-out", "AssembleWith": "Line", "Accept": "text/csv"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    deadline = time.time() + 120
    while (d := sm.describe_transform_job(TransformJobName="pm-batch"))["TransformJobStatus"] == "InProgress":
        assert time.time() < deadline
        time.sleep(0.2)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    written = server.store().get_bytes(BUCKET, "batch-out/rows.csv.out")
    np.testing.assert_allclose(_scores(written), _predict(boosters["big"], X[:50] * SCALE), rtol=1e-5)


# ------------------------------------------------------------------------------------------ multi-model
def test_multi_model_endpoint_serves_each_target_with_lru_of_one(server, artifacts):
    boosters, X = artifacts
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _deploy(sm, "pm-mme", {"PrimaryContainer": {
        "Image": XGB_IMAGE, "Mode": "MultiModel", "ModelDataUrl": f"s3://{BUCKET}/mme/",
        "Environment": {"OPENSAGE_MULTI_MODEL_MAX_LOADED": "1"}}})

    def invoke(target: str) -> np.ndarray:
        out = rt.invoke_endpoint(EndpointName="pm-mme", Body=_csv(X[:5]), ContentType="text/csv",
                                 Accept="text/csv", TargetModel=target)
        return _scores(out["Body"].read())

    for _ in range(2):  # with one model loaded at a time, each call evicts the other
        for name in ("small", "big"):
            np.testing.assert_allclose(invoke(f"{name}.tar.gz"), _predict(boosters[name], X[:5]), rtol=1e-5)
    assert not np.allclose(invoke("small.tar.gz"), invoke("big.tar.gz"))
    message = _validation_error(lambda: invoke("absent.tar.gz"))
    assert message.startswith(f"Failed to download model data(bucket: {BUCKET}, key: mme/absent.tar.gz).")
    assert "TargetModel" in _validation_error(
        lambda: rt.invoke_endpoint(EndpointName="pm-mme", Body=_csv(X[:1]), ContentType="text/csv"))


def test_target_model_on_single_model_endpoint_is_validation_error(server, artifacts):
    _, X = artifacts
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    _deploy(sm, "pm-single", {"PrimaryContainer": {"Image": XGB_IMAGE,
                                                   "ModelDataUrl": f"s3://{BUCKET}/xgb/small/model.tar.gz"}})
    message = _validation_error(lambda: rt.invoke_endpoint(EndpointName="pm-single", Body=_csv(X[:1]),
                                                           ContentType="text/csv", TargetModel="small.tar.gz"))
    assert "single model" in message


# ------------------------------------------------------------------------------------------ CreateModel
@pytest.mark.parametrize(("model", "wording"), [
    ({"PrimaryContainer": {"Image": XGB_IMAGE, "Mode": "MultiModel",
                           "ModelDataUrl": f"s3://{BUCKET}/mme/small.tar.gz"}}, "prefix"),
    ({"PrimaryContainer": {"Image": XGB_IMAGE, "Mode": "ManyModels", "ModelDataUrl": f"s3://{BUCKET}/mme/"}},
     "enum value set"),
    ({"Containers": _pipeline_containers(("only-one",))}, "every container or for none"),
    ({"PrimaryContainer": {"Image": XGB_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/xgb/small/model.tar.gz"},
      "InferenceExecutionConfig": {"Mode": "Direct"}}, "Direct"),
])
def test_create_model_invalid_multi_model_or_pipeline_is_refused(server, model, wording):
    with pytest.raises(ClientError) as err:
        server.client("sagemaker").create_model(ModelName="pm-invalid", ExecutionRoleArn=ROLE, **model)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert wording in err.value.response["Error"]["Message"]
