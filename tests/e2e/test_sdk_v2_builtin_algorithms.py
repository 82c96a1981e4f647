"""SDK v2 first-party estimators against `opensage up`, as AWS's example notebooks use them:
``record_set()`` (recordIO-protobuf shards + a ManifestFile channel) -> ``fit`` -> ``deploy`` -> ``predict``
with the predictors' default recordIO-protobuf serializer and deserializer (and JSON where asked)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

INSTANCE = "ml.m5.large"


def _deploy(estimator, sm_session):
    """``deploy`` as the notebooks call it; the SDK's own waiter with a 1 s poll instead of its 30 s one."""
    predictor = estimator.deploy(initial_instance_count=1, instance_type=INSTANCE, wait=False)
    sm_session.wait_for_endpoint(predictor.endpoint_name, poll=1)
    return predictor


def _final_metrics(sm_session, job_name):
    desc = sm_session.sagemaker_client.describe_training_job(TrainingJobName=job_name)
    return desc, {m["MetricName"]: m["Value"] for m in desc.get("FinalMetricDataList", [])}


def test_linear_learner_record_set_fit_deploy_predict_default_serializers(sm_session):
    import sagemaker
    from sagemaker.deserializers import JSONDeserializer
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    X, y = X[order].astype("float32"), y[order].astype("float32")
    ll = sagemaker.LinearLearner(role=ROLE, instance_count=1, instance_type=INSTANCE,
                                 predictor_type="binary_classifier", sagemaker_session=sm_session, epochs=10)
    train = ll.record_set(X[:400], labels=y[:400])
    test = ll.record_set(X[400:], labels=y[400:], channel="test")
    assert train.s3_data_type == "ManifestFile"
    ll.fit([train, test], logs=False)
    desc, metrics = _final_metrics(sm_session, ll.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed"
    assert desc["HyperParameters"]["feature_dim"] == "30"
    assert metrics["test:binary_classification_accuracy"] > 0.9
    assert "test:objective_loss" in metrics and "train:objective_loss" in metrics
    predictor = _deploy(ll, sm_session)
    try:
        records = predictor.predict(X[400:410])  # RecordSerializer -> RecordDeserializer
        labels = [r.label["predicted_label"].float32_tensor.values[0] for r in records]
        scores = [r.label["score"].float32_tensor.values[0] for r in records]
        assert len(records) == 10 and all(0.0 <= s <= 1.0 for s in scores)
        assert np.mean(np.array(labels) == y[400:410]) >= 0.8
        predictor.deserializer = JSONDeserializer()
        answer = predictor.predict(X[400:403])
        assert [p["predicted_label"] for p in answer["predictions"]] == [int(v) for v in labels[:3]]
    finally:
        predictor.delete_endpoint()


def test_kmeans_record_set_fit_deploy_predict_closest_cluster(sm_session):
    import sagemaker
    from sklearn.datasets import load_digits

    X = load_digits().data.astype("float32")
    kmeans = sagemaker.KMeans(role=ROLE, instance_count=1, instance_type=INSTANCE, k=10,
                              sagemaker_session=sm_session, eval_metrics=["msd", "ssd"])
    kmeans.fit([kmeans.record_set(X[:1500]), kmeans.record_set(X[1500:], channel="test")], logs=False)
    desc, metrics = _final_metrics(sm_session, kmeans.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed"
    assert metrics["test:ssd"] == pytest.approx(metrics["test:msd"] * (len(X) - 1500), rel=1e-4)
    predictor = _deploy(kmeans, sm_session)
    try:
        records = predictor.predict(X[1500:1520])
        clusters = {r.label["closest_cluster"].float32_tensor.values[0] for r in records}
        distances = [r.label["distance_to_cluster"].float32_tensor.values[0] for r in records]
        assert clusters <= set(map(float, range(10))) and len(clusters) > 3
        assert all(d >= 0 for d in distances)
    finally:
        predictor.delete_endpoint()


def test_pca_record_set_fit_deploy_predict_projection(sm_session):
    import sagemaker
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA as SkPCA

    X = load_digits().data.astype("float32")
    pca = sagemaker.PCA(role=ROLE, instance_count=1, instance_type=INSTANCE, num_components=3,
                        sagemaker_session=sm_session)
    pca.fit(pca.record_set(X), mini_batch_size=200, logs=False)
    predictor = _deploy(pca, sm_session)
    try:
        records = predictor.predict(X[:5])
        projection = np.array([list(r.label["projection"].float32_tensor.values) for r in records])
        reference = SkPCA(n_components=3).fit(X).transform(X[:5])[:, ::-1]  # SageMaker: most significant last
        signs = np.sign(np.sum(projection * reference, axis=0))
        np.testing.assert_allclose(projection * signs, reference, atol=1e-2 * np.abs(reference).max())
    finally:
        predictor.delete_endpoint()


def test_kmeans_pipe_mode_record_set_fit_reports_test_metrics(sm_session):
    """Pipe mode: the ManifestFile's shards arrive through the channel FIFO as one RecordIO stream."""
    import sagemaker
    from sklearn.datasets import load_iris

    X = load_iris().data.astype("float32")
    kmeans = sagemaker.KMeans(role=ROLE, instance_count=1, instance_type=INSTANCE, k=3, input_mode="Pipe",
                              sagemaker_session=sm_session)
    kmeans.fit([kmeans.record_set(X), kmeans.record_set(X[:30], channel="test")], logs=False)
    desc, metrics = _final_metrics(sm_session, kmeans.latest_training_job.name)
    assert desc["TrainingJobStatus"] == "Completed" and desc["AlgorithmSpecification"]["TrainingInputMode"] == "Pipe"
    assert 0 < metrics["test:msd"] < 1.0


def test_linear_learner_tuning_objective_validation_accuracy(sm_session):
    """SageMaker's linear-learner metric names work as tuning objectives (one model per child job)."""
    import sagemaker
    from sagemaker.tuner import ContinuousParameter, HyperparameterTuner
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(1).permutation(len(y))
    X, y = X[order].astype("float32"), y[order].astype("float32")
    ll = sagemaker.LinearLearner(role=ROLE, instance_count=1, instance_type=INSTANCE,
                                 predictor_type="binary_classifier", sagemaker_session=sm_session, epochs=5)
    tuner = HyperparameterTuner(ll, objective_metric_name="validation:binary_classification_accuracy",
                                hyperparameter_ranges={"wd": ContinuousParameter(1e-6, 1e-1,
                                                                                 scaling_type="Logarithmic")},
                                max_jobs=2, max_parallel_jobs=2)
    tuner.fit([ll.record_set(X[:400], labels=y[:400]),
               ll.record_set(X[400:], labels=y[400:], channel="validation")], mini_batch_size=100)
    desc = sm_session.sagemaker_client.describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=tuner.latest_tuning_job.name)
    assert desc["HyperParameterTuningJobStatus"] == "Completed"
    best = desc["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]
    assert best["MetricName"] == "validation:binary_classification_accuracy" and best["Value"] > 0.9
    assert desc["TrainingJobStatusCounters"]["Completed"] == 2


def test_linear_learner_batch_transform_csv_lines_to_jsonlines(sm_session, tmp_path):
    import sagemaker
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X, y = X.astype("float32"), y.astype("float32")
    ll = sagemaker.LinearLearner(role=ROLE, instance_count=1, instance_type=INSTANCE,
                                 predictor_type="binary_classifier", sagemaker_session=sm_session, epochs=5)
    ll.fit(ll.record_set(X, labels=y), logs=False)
    data = tmp_path / "batch.csv"
    np.savetxt(data, X[:50], delimiter=",", fmt="%.6g")
    bucket = sm_session.default_bucket()
    uri = sm_session.upload_data(str(data), bucket=bucket, key_prefix="e2e/ll-batch/in")
    transformer = ll.transformer(instance_count=1, instance_type=INSTANCE, strategy="MultiRecord",
                                 assemble_with="Line", accept="application/jsonlines",
                                 output_path=f"s3://{bucket}/e2e/ll-batch/out")
    transformer.transform(uri, content_type="text/csv", split_type="Line", logs=False)
    import json

    body = sm_session.read_s3_file(bucket, "e2e/ll-batch/out/batch.csv.out")
    rows = [json.loads(line) for line in body.splitlines() if line.strip()]
    assert len(rows) == 50 and set(rows[0]) == {"score", "predicted_label"}
    assert np.mean(np.array([r["predicted_label"] for r in rows]) == y[:50]) > 0.9
