"""SDK v2 hosting against `opensage up`: estimator.deploy(), Predictor.predict, update, delete."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_xgboost_estimator_deploy_predict_csv_and_delete(sm_session, tmp_path):
    import sagemaker
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.serializers import CSVSerializer
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    train = tmp_path / "train.csv"
    np.savetxt(train, np.column_stack([y, X]), delimiter=",", fmt="%.6g")
    bucket = sm_session.default_bucket()
    uri = sm_session.upload_data(str(train), bucket=bucket, key_prefix="e2e/host/train")
    est = Estimator(image_uri=sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1"), role=ROLE,
                    instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session,
                    output_path=f"s3://{bucket}/e2e/host/out",
                    hyperparameters={"num_round": 10, "objective": "binary:logistic"})
    est.fit({"train": TrainingInput(uri, content_type="text/csv")}, logs=False)
    predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large", serializer=CSVSerializer(),
                           deserializer=CSVDeserializer())
    try:
        rows = predictor.predict(X[:4])
        scores = [float(r[0]) for r in rows]
        assert len(scores) == 4
        assert [s > 0.5 for s in scores] == [bool(v) for v in y[:4]]
        desc = sm_session.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)
        assert desc["EndpointStatus"] == "InService"
        assert desc["ProductionVariants"][0]["VariantName"] == "AllTraffic"
        # Predictor.update_endpoint: a new endpoint config with 2 instances, a blue/green UpdateEndpoint.
        # (wait=True polls every 30 s; the SDK's own waiter with a short poll checks the same states.)
        predictor.update_endpoint(initial_instance_count=2, instance_type="ml.m5.large", wait=False)
        sm_session.wait_for_endpoint(predictor.endpoint_name, poll=1)
        desc = sm_session.sagemaker_client.describe_endpoint(EndpointName=predictor.endpoint_name)
        assert desc["EndpointConfigName"] != predictor.endpoint_name
        assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 2
        assert [float(r[0]) for r in predictor.predict(X[:4])] == scores
    finally:
        predictor.delete_endpoint()


def test_sklearn_model_with_inference_functions_serves_json(sm_session, tmp_path):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.serializers import JSONSerializer
    from sagemaker.sklearn import SKLearn

    bucket = sm_session.default_bucket()
    data = tmp_path / "train.csv"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    np.savetxt(data, np.column_stack([(X[:, 0] > 0).astype(int), X]), delimiter=",")
    uri = sm_session.upload_data(str(data), bucket=bucket, key_prefix="e2e/skhost/train")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent('''
        import os, joblib, numpy as np
        from sklearn.linear_model import LogisticRegression

        def model_fn(model_dir):
            return joblib.load(os.path.join(model_dir, "model.joblib"))

        if __name__ == "__main__":
            d = np.loadtxt(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.csv"), delimiter=",")
            m = LogisticRegression().fit(d[:, 1:], d[:, 0])
            joblib.dump(m, os.path.join(os.environ["SM_MODEL_DIR"], "model.joblib"))
    '''))
    est = SKLearn(entry_point="train.py", source_dir=str(src), framework_version="1.2-1", role=ROLE,
                  instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session)
    est.fit({"train": uri}, logs=False)
    predictor = est.deploy(initial_instance_count=1, instance_type="ml.m5.large", serializer=JSONSerializer(),
                           deserializer=JSONDeserializer())
    try:
        assert predictor.predict([[3.0, 0.0], [-3.0, 0.0]]) == [1.0, 0.0]
    finally:
        predictor.delete_endpoint()
