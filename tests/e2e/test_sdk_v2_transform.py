"""SDK v2 batch transform against `opensage up`: Transformer.transform(...) + wait() (with log tailing)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.conftest import ROLE
from tests.modelfiles import breast_cancer_xgb

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_transformer_transform_csv_lines_and_wait(sm_session, tmp_path):
    import sagemaker
    import xgboost as xgb
    from sagemaker.transformer import Transformer

    blob, X, _, booster = breast_cancer_xgb(10)
    expected = booster.predict(xgb.DMatrix(X))
    bucket = sm_session.default_bucket()
    model_tar = tmp_path / "model.tar.gz"
    model_tar.write_bytes(blob)
    model_uri = sm_session.upload_data(str(model_tar), bucket=bucket, key_prefix="e2e/tx/model")
    sm_session.sagemaker_client.create_model(ModelName="e2e-tx-model", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1"), "ModelDataUrl": model_uri})
    data = tmp_path / "batch.csv"
    np.savetxt(data, X, delimiter=",", fmt="%.6g")
    data_uri = sm_session.upload_data(str(data), bucket=bucket, key_prefix="e2e/tx/input")
    transformer = Transformer(model_name="e2e-tx-model", instance_count=1, instance_type="ml.m5.large",
                              strategy="MultiRecord", assemble_with="Line", accept="text/csv",
                              output_path=f"s3://{bucket}/e2e/tx/output", sagemaker_session=sm_session)
    transformer.transform(data_uri, content_type="text/csv", split_type="Line")
    transformer.wait()
    desc = sm_session.sagemaker_client.describe_transform_job(
        TransformJobName=transformer.latest_transform_job.name)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    body = sm_session.read_s3_file(bucket, "e2e/tx/output/batch.csv.out")
    scores = np.array([float(v) for v in body.splitlines() if v])
    assert scores.shape == (len(X),)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
