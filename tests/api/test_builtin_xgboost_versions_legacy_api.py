"""Built-in XGBoost model files written on AWS by older containers, served here with their image (boto3).

The platform's xgboost (>= 3.1) reads neither a Booster pickled by xgboost 1.0 ... 1.5 (1.0-1 / 1.2-x images) nor
the legacy binary format that ``save_model`` writes without an extension (1.3-1 ... 1.7-1 images, file starts
``binf``), nor a 0.90 pickle. Served with the image version that wrote them, they run in that version's
environment (built with uv on first use, cached; ``opensage.images.environment_for_image``).

Fixtures (tests/unit/algorithms/data, made offline in throwaway venvs with ``uv pip install xgboost==<v>
'numpy<2'``): ``xgb090-booster.pkl`` (xgboost 0.90, see tests/unit/algorithms/test_xgboost_versions.py),
``xgb12-booster.pkl`` (xgboost 1.2.0, ``pickle.dump(booster, f, protocol=4)`` as 1.2-x writes it) and
``xgb174-model.binf`` (xgboost 1.7.4, ``booster.save_model("xgboost-model")``). All three: 3 features,
binary:logistic, max_depth 2, 3 rounds on ``np.random.RandomState(0).rand(50, 3)`` with label ``x0 > 0.5``;
each xgboost predicts ``[0.7838502526283264, 0.22058989107608795]`` for the two rows of ``ROWS``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import ROLE
from tests.modelfiles import tar_gz

pytestmark = pytest.mark.slow  # each image version builds its environment once (uv; wheels cached per machine)

ECR = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost"
DATA = Path(__file__).resolve().parents[1] / "unit" / "algorithms" / "data"
ROWS = "0.9,0.1,0.2\n0.1,0.5,0.5"
EXPECTED = [0.7838502526283264, 0.22058989107608795]  # what the fixture's own xgboost predicts for ROWS
BUCKET = "legacyxgb"


@pytest.fixture(scope="module")
def models(server):
    store = server.store()
    store.ensure_bucket(BUCKET)
    for key, fixture in (("pickle12", "xgb12-booster.pkl"), ("binf174", "xgb174-model.binf"),
                         ("pickle090", "xgb090-booster.pkl")):
        blob = tar_gz({"xgboost-model": (DATA / fixture).read_bytes()})
        store.put_bytes(BUCKET, f"models/{key}/model.tar.gz", blob)
    store.put_bytes(BUCKET, "in/rows.csv", (ROWS + "\n").encode())
    return BUCKET


def _deploy(sm, name: str, image: str, model_key: str) -> dict:
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": image, "ModelDataUrl": f"s3://{BUCKET}/models/{model_key}/model.tar.gz"})
    sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": name, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    deadline = time.time() + 420  # the first use of an image version builds its environment
    while time.time() < deadline:
        d = sm.describe_endpoint(EndpointName=name)
        if d["EndpointStatus"] not in ("Creating", "Updating"):
            return d
        time.sleep(0.5)
    raise AssertionError(f"endpoint {name} still {d['EndpointStatus']}")


def _floats(body: str, sep: str) -> list[float]:
    return [float(v) for v in body.strip().split(sep)]


def test_invoke_endpoint_xgboost_12_1_aws_pickled_booster_served_by_its_xgboost(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    d = _deploy(sm, "legacy-xgb-12", f"{ECR}:1.2-1", "pickle12")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    r = rt.invoke_endpoint(EndpointName="legacy-xgb-12", ContentType="text/csv", Body=ROWS)
    body = r["Body"].read().decode()
    assert "\n" not in body  # 1.2-1: comma-joined, no trailing newline
    assert _floats(body, ",") == pytest.approx(EXPECTED, abs=1e-7)


def test_invoke_endpoint_xgboost_17_1_aws_binary_model_served_by_its_xgboost(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    d = _deploy(sm, "legacy-xgb-17", f"{ECR}:1.7-1", "binf174")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    r = rt.invoke_endpoint(EndpointName="legacy-xgb-17", ContentType="text/csv", Body=ROWS)
    body = r["Body"].read().decode()
    assert body.endswith("\n")  # 1.7-1: one value per line
    assert _floats(body, "\n") == pytest.approx(EXPECTED, abs=1e-7)


def test_invoke_endpoint_xgboost_090_2_aws_pickled_booster_served_by_xgboost_090(server, models):
    sm, rt = server.client("sagemaker"), server.client("sagemaker-runtime")
    d = _deploy(sm, "legacy-xgb-090", f"{ECR}:0.90-2-cpu-py3", "pickle090")
    assert d["EndpointStatus"] == "InService", d.get("FailureReason")
    r = rt.invoke_endpoint(EndpointName="legacy-xgb-090", ContentType="text/csv", Body=ROWS)
    assert _floats(r["Body"].read().decode(), ",") == pytest.approx(EXPECTED, abs=1e-7)


def test_create_transform_job_xgboost_17_1_aws_binary_model_uses_its_xgboost(server, models):
    sm = server.client("sagemaker")
    sm.create_model(ModelName="legacy-xgb-17-bt", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": f"{ECR}:1.7-1", "ModelDataUrl": f"s3://{BUCKET}/models/binf174/model.tar.gz"})
    sm.create_transform_job(
        TransformJobName="legacy-xgb-17-bt", ModelName="legacy-xgb-17-bt",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/in/"}},
                        "ContentType": "text/csv", "SplitType": "Line"},
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/out/legacy-xgb-17-bt"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1})
    deadline = time.time() + 420
    while time.time() < deadline:
        d = sm.describe_transform_job(TransformJobName="legacy-xgb-17-bt")
        if d["TransformJobStatus"] not in ("InProgress", "Stopping"):
            break
        time.sleep(0.5)
    assert d["TransformJobStatus"] == "Completed", d.get("FailureReason")
    out = server.store().get_bytes(BUCKET, "out/legacy-xgb-17-bt/rows.csv.out").decode()
    assert _floats(out, "\n") == pytest.approx(EXPECTED, abs=1e-7)
