"""SDK v2's model registry flow against `opensage up`, as AWS's model-registry notebooks run it: train built-in
XGBoost, ``estimator.register(...)`` into a model package group, approve the version, then
``ModelPackage(...).deploy()`` -> predict and ``ModelPackage(...).transformer().transform()``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_estimator_register_approve_deploy_and_transform_predict_with_the_trained_model(sm_session, tmp_path):
    import sagemaker
    from sagemaker import ModelPackage
    from sagemaker.deserializers import CSVDeserializer
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import CSVSerializer
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    train = tmp_path / "train.csv"
    np.savetxt(train, np.column_stack([y, X]), delimiter=",", fmt="%.6g")
    bucket = sm_session.default_bucket()
    uri = sm_session.upload_data(str(train), bucket=bucket, key_prefix="e2e/registry/train")
    est = Estimator(image_uri=sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1"), role=ROLE,
                    instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session,
                    output_path=f"s3://{bucket}/e2e/registry/out",
                    hyperparameters={"num_round": 10, "objective": "binary:logistic", "max_depth": 3})
    est.fit({"train": TrainingInput(uri, content_type="text/csv")}, logs=False)

    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps({"binary_classification_metrics": {"auc": {"value": 0.99}}}))
    metrics_uri = sm_session.upload_data(str(evaluation), bucket=bucket, key_prefix="e2e/registry/eval")
    metrics = ModelMetrics(model_statistics=MetricsSource(s3_uri=metrics_uri, content_type="application/json"))
    group = "e2e-BreastCancer-Models"
    registered = est.register(content_types=["text/csv"], response_types=["text/csv"],
                              inference_instances=["ml.m5.large"], transform_instances=["ml.m5.large"],
                              model_package_group_name=group, approval_status="PendingManualApproval",
                              model_metrics=metrics, customer_metadata_properties={"dataset": "breast-cancer"},
                              description="built-in XGBoost, 10 rounds")
    arn = registered.model_package_arn
    assert arn.endswith(":model-package/e2e-breastcancer-models/1")

    sm = sm_session.sagemaker_client
    desc = sm.describe_model_package(ModelPackageName=arn)
    assert (desc["ModelPackageStatus"], desc["ModelApprovalStatus"]) == ("Completed", "PendingManualApproval")
    assert desc["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == est.model_data
    assert desc["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] == metrics_uri
    assert desc["CustomerMetadataProperties"] == {"dataset": "breast-cancer"}
    versions = sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]
    assert [v["ModelPackageArn"] for v in versions] == [arn]

    # The notebook's approval step, then deploy the approved version by its ARN.
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved",
                            ApprovalDescription="auc above threshold")
    package = ModelPackage(role=ROLE, model_package_arn=arn, sagemaker_session=sm_session)
    endpoint = "e2e-registry-ep"
    package.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=endpoint, wait=False)
    sm_session.wait_for_endpoint(endpoint, poll=1)
    predictor = Predictor(endpoint, sagemaker_session=sm_session, serializer=CSVSerializer(),
                          deserializer=CSVDeserializer())
    try:
        scores = [float(r[0]) for r in predictor.predict(X[:8])]
        assert [s > 0.5 for s in scores] == [bool(v) for v in y[:8]]
        model = sm.describe_model(ModelName=package.name)
        assert model["Containers"][0]["ModelPackageName"] == arn  # the SDK sends Containers for a package
    finally:
        predictor.delete_endpoint()

    # Batch transform from the same package.
    batch = tmp_path / "batch.csv"
    np.savetxt(batch, X[:20], delimiter=",", fmt="%.6g")
    batch_uri = sm_session.upload_data(str(batch), bucket=bucket, key_prefix="e2e/registry/batch-in")
    transformer = ModelPackage(role=ROLE, model_package_arn=arn, sagemaker_session=sm_session).transformer(
        instance_count=1, instance_type="ml.m5.large", output_path=f"s3://{bucket}/e2e/registry/batch-out",
        accept="text/csv", assemble_with="Line")
    transformer.transform(batch_uri, content_type="text/csv", split_type="Line", wait=False)
    sm_session.wait_for_transform_job(transformer.latest_transform_job.name, poll=1)
    out = sm_session.read_s3_file(bucket, "e2e/registry/batch-out/batch.csv.out")
    predictions = [float(v) for v in out.split()]
    assert len(predictions) == 20
    assert np.mean([(p > 0.5) == bool(t) for p, t in zip(predictions, y[:20], strict=True)]) >= 0.9

    # model.register() (no estimator) adds version 2; deploying it unapproved, the SDK approves it first.
    second = est.create_model().register(content_types=["text/csv"], response_types=["text/csv"],
                                         model_package_group_name=group)
    assert second.model_package_arn.endswith(":model-package/e2e-breastcancer-models/2")
    assert sm.describe_model_package(ModelPackageName=second.model_package_arn)["ModelApprovalStatus"] == \
        "PendingManualApproval"
    endpoint = "e2e-registry-ep-v2"
    ModelPackage(role=ROLE, model_package_arn=second.model_package_arn, sagemaker_session=sm_session).deploy(
        initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=endpoint, wait=False)
    sm_session.wait_for_endpoint(endpoint, poll=1)
    try:
        assert sm.describe_model_package(ModelPackageName=second.model_package_arn)["ModelApprovalStatus"] == \
            "Approved"
        body = sm_session.sagemaker_runtime_client.invoke_endpoint(
            EndpointName=endpoint, ContentType="text/csv",
            Body="\n".join(",".join(f"{v:.6g}" for v in row) for row in X[:3]))["Body"].read().decode()
        assert [float(s) > 0.5 for s in body.split()] == [bool(v) for v in y[:3]]
    finally:
        sm.delete_endpoint(EndpointName=endpoint)
    approved = sm.list_model_packages(ModelPackageGroupName=group, ModelApprovalStatus="Approved",
                                      SortBy="CreationTime", SortOrder="Descending")["ModelPackageSummaryList"]
    assert [v["ModelPackageVersion"] for v in approved] == [2, 1]
