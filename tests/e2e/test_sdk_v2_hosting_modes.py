"""SDK v2 hosting modes against `opensage up`: serverless (ServerlessInferenceConfig), multi-model
(MultiDataModel + predict(target_model=...)) and an inference pipeline (PipelineModel: sklearn script-mode
preprocessing feeding built-in XGBoost)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import ROLE
from tests.modelfiles import tar_gz, train_xgb, xgb_model_tar

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _xgb_model(tmp_path: Path, name: str, X: np.ndarray, y: np.ndarray, rounds: int):
    """A built-in XGBoost model.tar.gz written under ``tmp_path``: (its path, the booster)."""
    booster = train_xgb(X, y, rounds)
    path = tmp_path / f"{name}.tar.gz"
    path.write_bytes(xgb_model_tar(booster))
    return str(path), booster


def _xgb_image() -> str:
    import sagemaker

    return sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1")


def _csv_predictor(name: str, sm_session):
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import CSVSerializer

    return Predictor(name, sm_session, serializer=CSVSerializer(), deserializer=CSVDeserializer())


def _scores(rows) -> list[float]:
    return [float(r[0]) for r in rows]


def test_serverless_deploy_predicts_after_cold_start(sm_session, tmp_path):
    from sagemaker.model import Model
    from sagemaker.serverless import ServerlessInferenceConfig
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    path, booster = _xgb_model(tmp_path, "sls", X, y, 10)
    data = sm_session.upload_data(path, bucket=sm_session.default_bucket(), key_prefix="e2e/sls/model")
    model = Model(image_uri=_xgb_image(), model_data=data, role=ROLE, sagemaker_session=sm_session)
    name = "e2e-serverless"
    model.deploy(serverless_inference_config=ServerlessInferenceConfig(memory_size_in_mb=2048, max_concurrency=2),
                 endpoint_name=name, wait=False)
    sm_session.wait_for_endpoint(name, poll=1)
    predictor = _csv_predictor(name, sm_session)
    try:
        desc = sm_session.sagemaker_client.describe_endpoint(EndpointName=name)
        assert desc["ProductionVariants"][0]["CurrentServerlessConfig"]["MaxConcurrency"] == 2
        import xgboost as xgb

        expected = booster.predict(xgb.DMatrix(X[:3]))
        assert np.allclose(_scores(predictor.predict(X[:3])), expected, atol=1e-5)
    finally:
        predictor.delete_endpoint()


def test_multi_data_model_serves_models_added_after_deploy(sm_session, tmp_path):
    from sagemaker.multidatamodel import MultiDataModel
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    bucket = sm_session.default_bucket()
    prefix = f"s3://{bucket}/e2e/mme/models/"
    mdm = MultiDataModel(name="e2e-mme-model", model_data_prefix=prefix, image_uri=_xgb_image(), role=ROLE,
                         sagemaker_session=sm_session)
    name = "e2e-mme"
    mdm.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=name, wait=False)
    sm_session.wait_for_endpoint(name, poll=1)
    predictor = _csv_predictor(name, sm_session)
    try:
        import xgboost as xgb

        expected = {}
        for tag, rounds in (("small", 2), ("large", 30)):  # added to the prefix after the endpoint is up
            path, booster = _xgb_model(tmp_path, tag, X, y, rounds)
            mdm.add_model(path, f"{tag}.tar.gz")
            expected[tag] = booster.predict(xgb.DMatrix(X[:3]))
        assert sorted(mdm.list_models()) == ["large.tar.gz", "small.tar.gz"]
        for tag in ("small", "large", "small"):
            got = _scores(predictor.predict(X[:3], target_model=f"{tag}.tar.gz"))
            assert np.allclose(got, expected[tag], atol=1e-5)
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as err:
            predictor.predict(X[:3], target_model="missing.tar.gz")
        assert err.value.response["Error"]["Code"] == "ValidationError"
        assert "missing.tar.gz" in err.value.response["Error"]["Message"]
    finally:
        predictor.delete_endpoint()


def test_pipeline_model_chains_sklearn_preprocessing_into_xgboost(sm_session, tmp_path):
    import joblib
    import xgboost as xgb
    from sagemaker.model import Model
    from sagemaker.pipeline import PipelineModel
    from sagemaker.sklearn import SKLearnModel
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    scaler = StandardScaler().fit(X)
    scaled = scaler.transform(X)
    path, booster = _xgb_model(tmp_path, "pipe-xgb", scaled, y, 10)
    bucket = sm_session.default_bucket()
    xgb_data = sm_session.upload_data(path, bucket=bucket, key_prefix="e2e/pipe/xgb")
    joblib.dump(scaler, tmp_path / "scaler.joblib")
    scaler_tar = tmp_path / "scaler.tar.gz"
    scaler_tar.write_bytes(tar_gz({"scaler.joblib": (tmp_path / "scaler.joblib").read_bytes()}))
    scaler_data = sm_session.upload_data(str(scaler_tar), bucket=bucket, key_prefix="e2e/pipe/scaler")
    code = tmp_path / "code"
    code.mkdir()
    (code / "preprocess.py").write_text(textwrap.dedent('''
        import os, joblib

        def model_fn(model_dir):
            return joblib.load(os.path.join(model_dir, "scaler.joblib"))

        def predict_fn(data, scaler):
            return scaler.transform(data)
    '''))
    preprocess = SKLearnModel(model_data=scaler_data, role=ROLE, entry_point="preprocess.py", source_dir=str(code),
                              framework_version="1.2-1", sagemaker_session=sm_session,
                              env={"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"})
    xgb_model = Model(image_uri=_xgb_image(), model_data=xgb_data, role=ROLE, sagemaker_session=sm_session)
    pipeline = PipelineModel(models=[preprocess, xgb_model], role=ROLE, sagemaker_session=sm_session,
                             name="e2e-pipeline-model")
    name = "e2e-pipeline"
    pipeline.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=name, wait=False)
    sm_session.wait_for_endpoint(name, poll=1)
    predictor = _csv_predictor(name, sm_session)
    try:
        desc = sm_session.sagemaker_client.describe_model(ModelName="e2e-pipeline-model")
        assert len(desc["Containers"]) == 2
        got = _scores(predictor.predict(X[:4]))  # raw features in; the pipeline scales them
        assert np.allclose(got, booster.predict(xgb.DMatrix(scaled[:4])), atol=1e-4)
    finally:
        predictor.delete_endpoint()
