"""SDK v2 against `opensage up`: a rolling deployment as AWS's deployment-guardrails notebook does it
(issue 8 item 6): Model.deploy() with two instances, a second model and endpoint config, then UpdateEndpoint
with DeploymentConfig.RollingUpdatePolicy through the session's client while a caller keeps predicting."""

from __future__ import annotations

import threading

import pytest

from tests.e2e.conftest import ROLE
from tests.modelfiles import breast_cancer_xgb

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_update_endpoint_rolling_update_policy_replaces_model_without_failed_predictions(sm_session, tmp_path):
    import sagemaker
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import CSVSerializer

    image = sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    bucket = sm_session.default_bucket()
    models = []
    for rounds in (2, 40):  # two models that score the same rows differently
        blob, X, _, _ = breast_cancer_xgb(rounds)
        path = tmp_path / f"model-{rounds}.tar.gz"
        path.write_bytes(blob)
        uri = sm_session.upload_data(str(path), bucket=bucket, key_prefix=f"e2e/rolling/{rounds}")
        models.append(Model(image_uri=image, model_data=uri, role=ROLE, sagemaker_session=sm_session,
                            name=f"rolling-model-{rounds}"))
    models[0].deploy(initial_instance_count=2, instance_type="ml.m5.large", endpoint_name="e2e-rolling")
    # A Model without predictor_cls deploys and returns None, as on AWS: the notebook builds the Predictor.
    predictor = Predictor("e2e-rolling", sagemaker_session=sm_session, serializer=CSVSerializer(),
                          deserializer=CSVDeserializer())
    try:
        rows = X[:3]
        before = [float(r[0]) for r in predictor.predict(rows)]
        models[1].create(instance_type="ml.m5.large")
        sm_session.create_endpoint_config(name="e2e-rolling-v2", model_name=models[1].name,
                                          initial_instance_count=2, instance_type="ml.m5.large")

        failures: list[str] = []
        stop = threading.Event()

        def keep_predicting() -> None:
            while not stop.is_set():
                try:
                    predictor.predict(rows)
                except Exception as exc:  # noqa: BLE001 - any failed prediction is what we count
                    failures.append(repr(exc))

        caller = threading.Thread(target=keep_predicting)
        caller.start()
        try:
            sm_session.sagemaker_client.update_endpoint(
                EndpointName="e2e-rolling", EndpointConfigName="e2e-rolling-v2", DeploymentConfig={
                    "RollingUpdatePolicy": {"MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 1},
                                            "WaitIntervalInSeconds": 1,
                                            "MaximumExecutionTimeoutInSeconds": 600}})
            desc = sm_session.wait_for_endpoint("e2e-rolling", poll=1)
        finally:
            stop.set()
            caller.join()
        assert desc["EndpointStatus"] == "InService"
        assert desc["EndpointConfigName"] == "e2e-rolling-v2"
        assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 2
        rolling = desc["LastDeploymentConfig"]["RollingUpdatePolicy"]
        assert rolling["MaximumBatchSize"] == {"Type": "INSTANCE_COUNT", "Value": 1}
        assert failures == []
        after = [float(r[0]) for r in predictor.predict(rows)]
        assert after != before
    finally:
        predictor.delete_endpoint(delete_endpoint_config=False)
