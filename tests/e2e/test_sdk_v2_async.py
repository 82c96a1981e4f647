"""SDK v2 asynchronous inference against `opensage up`: Model.deploy(async_inference_config=...) and
AsyncPredictor.predict / predict_async, which upload the input, call InvokeEndpointAsync and poll S3."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ROLE
from tests.modelfiles import breast_cancer_xgb

# AsyncPredictor polls the output and the failure object in two threads and leaves the losing one polling
# until its max attempts: it fails noisily once the platform is stopped at the end of the session.
pytestmark = [pytest.mark.slow, pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")]


def test_async_predictor_predict_and_failure_path(sm_session, tmp_path):
    import sagemaker
    from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor
    from sagemaker.predictor_async import AsyncPredictor
    from sagemaker.serializers import CSVSerializer

    blob, X, y, _ = breast_cancer_xgb(10)
    path = tmp_path / "model.tar.gz"
    path.write_bytes(blob)
    bucket = sm_session.default_bucket()
    model_data = sm_session.upload_data(str(path), bucket=bucket, key_prefix="e2e/async/model")
    model = Model(image_uri=sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1"), model_data=model_data,
                  role=ROLE, sagemaker_session=sm_session)
    config = AsyncInferenceConfig(output_path=f"s3://{bucket}/e2e/async/out",
                                  failure_path=f"s3://{bucket}/e2e/async/fail", max_concurrent_invocations_per_instance=2)
    name = "e2e-async-xgb"
    model.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=name,
                 async_inference_config=config, wait=False)
    sm_session.wait_for_endpoint(name, poll=1)
    predictor = AsyncPredictor(Predictor(name, sm_session, serializer=CSVSerializer(),
                                         deserializer=CSVDeserializer()))
    waiter = WaiterConfig(max_attempts=60, delay=1)
    try:
        rows = predictor.predict(X[:4], waiter_config=waiter)
        assert [float(r[0]) > 0.5 for r in rows] == [bool(v) for v in y[:4]]
        response = predictor.predict_async(X[4:6])
        assert response.output_path.endswith(".out")
        assert len(response.get_result(waiter)) == 2
        with pytest.raises(AsyncInferenceModelError) as e:
            predictor.predict("not,a,number", waiter_config=waiter)
        assert "Received client error (400)" in str(e.value)
    finally:
        predictor.delete_endpoint()
