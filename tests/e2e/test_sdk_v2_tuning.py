"""SageMaker Python SDK v2's HyperparameterTuner, unmodified, against `opensage up`: built-in XGBoost on
scikit-learn's breast-cancer set, as AWS's tuning example notebooks do it (small: 4 jobs, 2 at a time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _data(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(y))
    X, y = X[idx], y[idx]
    train, validation = tmp_path / "train.csv", tmp_path / "validation.csv"
    np.savetxt(train, np.column_stack([y[:350], X[:350]]), delimiter=",", fmt="%.6g")
    np.savetxt(validation, np.column_stack([y[350:480], X[350:480]]), delimiter=",", fmt="%.6g")
    return train, validation, X[480:], y[480:]


def test_hyperparameter_tuner_fit_best_job_attach_analytics_deploy(sm_session, tmp_path, monkeypatch):
    import sagemaker
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.serializers import CSVSerializer
    from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter

    train, validation, X_test, y_test = _data(tmp_path)
    bucket = sm_session.default_bucket()
    train_uri = sm_session.upload_data(str(train), bucket=bucket, key_prefix="e2e/hpo/train")
    validation_uri = sm_session.upload_data(str(validation), bucket=bucket, key_prefix="e2e/hpo/validation")
    image = sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    est = Estimator(image_uri=image, role=ROLE, instance_count=1, instance_type="ml.m5.large",
                    output_path=f"s3://{bucket}/e2e/hpo/out", sagemaker_session=sm_session,
                    hyperparameters={"num_round": 15, "objective": "binary:logistic"})
    tuner = HyperparameterTuner(
        est, objective_metric_name="validation:auc", objective_type="Maximize",
        hyperparameter_ranges={"eta": ContinuousParameter(0.05, 0.5), "max_depth": IntegerParameter(2, 6)},
        max_jobs=4, max_parallel_jobs=2, strategy="Bayesian", random_seed=1, base_tuning_job_name="e2e-xgb")
    tuner.fit({"train": TrainingInput(train_uri, content_type="text/csv"),
               "validation": TrainingInput(validation_uri, content_type="text/csv")}, wait=True)
    name = tuner.latest_tuning_job.name
    desc = tuner.describe()
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["TrainingJobStatusCounters"]["Completed"] == 4

    best = tuner.best_training_job()
    assert best == desc["BestTrainingJob"]["TrainingJobName"] and best.startswith(name + "-")
    best_job = sm_session.describe_training_job(best)
    assert best_job["TuningJobArn"] == desc["HyperParameterTuningJobArn"]
    assert best_job["HyperParameters"]["_tuning_objective_metric"] == "validation:auc"

    frame = tuner.analytics().dataframe()
    assert len(frame) == 4
    assert {"eta", "max_depth", "FinalObjectiveValue", "TrainingJobName", "TrainingElapsedTimeSeconds"} <= set(
        frame.columns)
    assert frame["FinalObjectiveValue"].max() == pytest.approx(
        desc["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])

    attached = HyperparameterTuner.attach(name, sagemaker_session=sm_session)
    assert attached.objective_metric_name == "validation:auc"
    assert set(attached.hyperparameter_ranges()) >= {"ContinuousParameterRanges", "IntegerParameterRanges"}
    assert attached.best_training_job() == best

    # The SDK's own tuning plots, drawn from this platform's API (tuning job, training jobs, CloudWatch).
    monkeypatch.setenv("HOME", str(tmp_path))  # amtviz caches CloudWatch answers under ~/.amtviz
    from sagemaker.amtviz import visualize_tuning_job

    chart, trials, full = visualize_tuning_job(name, return_dfs=True)
    assert len(trials) == 4 and not full.empty
    assert "validation:auc" in set(full["label"]) or "validation_auc" in set(full.columns)
    chart.to_dict()  # renders to a Vega-Lite spec

    predictor = attached.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                serializer=CSVSerializer())
    try:
        body = predictor.predict(X_test).decode()
        scores = np.array([float(v) for v in body.replace(",", "\n").split()])
        assert ((scores > 0.5) == y_test).mean() > 0.85
    finally:
        predictor.delete_endpoint()


def test_tuning_job_survives_control_plane_kill_and_finishes_without_repeating_trials(tmp_path):
    """`opensage up` SIGKILLed while children train: the next `up` adopts them, rebuilds the study from the
    store and launches only the trials still owed."""
    import os
    import signal
    import time

    from tests.e2e.conftest import start_platform, stop_platform
    from tests.e2e.test_durability import _clients

    train, validation, _, _ = _data(tmp_path)
    home = tmp_path / "home"
    p = start_platform(home)
    sm, s3 = _clients(p)
    bucket = "sagemaker-us-east-1-000000000000"
    s3.upload_file(str(train), bucket, "restart/train/train.csv")
    s3.upload_file(str(validation), bucket, "restart/validation/validation.csv")
    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="e2e-restart",
        HyperParameterTuningJobConfig={
            "Strategy": "Random", "RandomSeed": 4,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 5, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.05",
                                                               "MaxValue": "0.5"}]}},
        TrainingJobDefinition={
            "StaticHyperParameters": {"num_round": "40", "objective": "binary:logistic"},
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "InputDataConfig": [{"ChannelName": ch, "ContentType": "text/csv", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": f"s3://{bucket}/restart/{ch}"}}}
                for ch in ("train", "validation")],
            "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/restart/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600}})

    def children(client) -> list[dict]:
        return client.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="e2e-restart", MaxResults=100)["TrainingJobSummaries"]

    deadline = time.time() + 240
    while not any(c["TrainingJobStatus"] == "Completed" for c in children(sm)):
        assert time.time() < deadline, children(sm)
        time.sleep(0.5)
    before = {c["TrainingJobName"]: c for c in children(sm)}
    os.kill(p.proc.pid, signal.SIGKILL)  # no chance to clean up; the children's agents keep running
    p.proc.wait()
    p2 = start_platform(home)
    try:
        sm, _ = _clients(p2)
        deadline = time.time() + 400
        while True:
            d = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="e2e-restart")
            if d["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping"):
                break
            assert time.time() < deadline, d["TrainingJobStatusCounters"]
            time.sleep(1)
        after = children(sm)
    finally:
        stop_platform(p2)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert len(after) == 5, [c["TrainingJobName"] for c in after]
    assert all(c["TrainingJobStatus"] == "Completed" for c in after), [
        (c["TrainingJobName"], c["TrainingJobStatus"], c.get("FailureReason")) for c in after]
    by_name = {c["TrainingJobName"]: c for c in after}
    for name, c in before.items():  # the jobs from before the kill, adopted, not run again
        assert by_name[name]["TunedHyperParameters"] == c["TunedHyperParameters"]
    assert sorted(int(n.split("-")[2]) for n in by_name) == [1, 2, 3, 4, 5]
    assert len({c["TunedHyperParameters"]["eta"] for c in after}) == 5
