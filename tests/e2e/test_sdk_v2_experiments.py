"""SDK v2 experiment tracking against `opensage up`, as AWS's "track an experiment" notebooks use it: a ``Run``
logging parameters, metrics and a file around a training job, the job's own code loading the run
(``load_run`` from the job's ExperimentConfig), then ``list_runs`` and the run's record."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_run_logs_parameters_metrics_file_around_training_job_whose_code_loads_the_run(sm_session, tmp_path,
                                                                                        monkeypatch):
    import sagemaker
    from sagemaker.estimator import Estimator
    from sagemaker.experiments.run import Run, list_runs, load_run
    from sagemaker.inputs import TrainingInput
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    train = tmp_path / "train.csv"
    np.savetxt(train, np.column_stack([y, X]), delimiter=",", fmt="%.6g")
    bucket = sm_session.default_bucket()
    uri = sm_session.upload_data(str(train), bucket=bucket, key_prefix="e2e/experiments/train")
    experiment = f"breast-cancer-{uuid.uuid4().hex[:8]}"

    with Run(experiment_name=experiment, run_name="xgb-depth-3", sagemaker_session=sm_session) as run:
        run.log_parameters({"max_depth": 3, "objective": "binary:logistic"})
        for epoch, loss in enumerate([0.61, 0.42, 0.35]):
            run.log_metric(name="train:loss", value=loss, step=epoch)
        run.log_file(str(train), name="training-data", is_output=False)
        run.log_confusion_matrix([1, 0, 1, 1], [1, 0, 0, 1], title="held-out")
        est = Estimator(image_uri=sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1"), role=ROLE,
                        instance_count=1, instance_type="ml.m5.large", sagemaker_session=sm_session,
                        output_path=f"s3://{bucket}/e2e/experiments/out",
                        hyperparameters={"num_round": 10, "objective": "binary:logistic", "max_depth": 3})
        est.fit({"train": TrainingInput(uri, content_type="text/csv")}, logs=False)

    run_component = run._trial_component.trial_component_name
    job = est.latest_training_job.describe()
    assert job["ExperimentConfig"] == {"ExperimentName": experiment, "TrialName": run.run_group_name,
                                       "RunName": run_component}
    # Inside the job, `load_run()` finds the run from TRAINING_JOB_ARN and the job's ExperimentConfig.
    monkeypatch.setenv("TRAINING_JOB_ARN", job["TrainingJobArn"])
    with load_run(sagemaker_session=sm_session) as job_run:
        assert (job_run.experiment_name, job_run.run_name) == (experiment, "xgb-depth-3")
        job_run.log_metric(name="validation:auc", value=0.97, step=0)
        job_run.log_metric(name="validation:auc", value=0.98, step=1)

    record = sm_session.sagemaker_client.describe_trial_component(TrialComponentName=run_component)
    assert record["Status"]["PrimaryStatus"] == "Completed"
    assert record["StartTime"] <= record["EndTime"]
    assert record["Parameters"] == {"max_depth": {"NumberValue": 3.0},
                                    "objective": {"StringValue": "binary:logistic"}}
    metrics = {m["MetricName"]: m for m in record["Metrics"]}
    assert (metrics["train:loss"]["Count"], metrics["train:loss"]["Last"], metrics["train:loss"]["Min"]) == (
        3, 0.35, 0.35)
    assert (metrics["validation:auc"]["Count"], metrics["validation:auc"]["Max"]) == (2, 0.98)
    data = record["InputArtifacts"]["training-data"]["Value"]
    key = data.removeprefix(f"s3://{bucket}/")
    assert sm_session.read_s3_file(bucket, key) == train.read_text()  # the logged file is in S3

    # The confusion matrix: a JSON document in S3, a lineage artifact the run produced.
    produced = sm_session.sagemaker_client.list_associations(SourceArn=record["TrialComponentArn"])
    [association] = produced["AssociationSummaries"]
    assert (association["AssociationType"], association["DestinationType"]) == ("Produced", "ConfusionMatrix")
    artifact = sm_session.sagemaker_client.describe_artifact(ArtifactArn=association["DestinationArn"])
    matrix_uri = artifact["Source"]["SourceUri"]
    import json

    matrix = json.loads(sm_session.read_s3_file(bucket, matrix_uri.removeprefix(f"s3://{bucket}/")))
    assert matrix["type"] == "ConfusionMatrix" and matrix["title"] == "held-out"

    runs = list_runs(experiment_name=experiment, sagemaker_session=sm_session)
    assert [(r.experiment_name, r.run_name) for r in runs] == [(experiment, "xgb-depth-3")]
    trials = sm_session.sagemaker_client.list_trials(ExperimentName=experiment)["TrialSummaries"]
    assert [t["TrialName"] for t in trials] == [run.run_group_name]
    # The notebooks' comparison table: one row per run, its parameters and metric summaries as columns.
    from sagemaker.analytics import ExperimentAnalytics

    # The training job has a row of its own, as in SageMaker: its trial component, in the run's group.
    table = ExperimentAnalytics(experiment_name=experiment, sagemaker_session=sm_session).dataframe()
    job_component = f"{job['TrainingJobName']}-aws-training-job"
    assert sorted(table["TrialComponentName"]) == sorted([run_component, job_component])
    row = table[table["TrialComponentName"] == run_component].iloc[0]
    assert (row["max_depth"], row["objective"]) == (3.0, "binary:logistic")
    assert (row["train:loss - Last"], row["validation:auc - Max"]) == (0.35, 0.98)
    job_row = table[table["TrialComponentName"] == job_component].iloc[0]
    assert (job_row["num_round"], job_row["SageMaker.InstanceType"]) == (10.0, "ml.m5.large")
    final = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert final and all(job_row[f"{name} - Last"] == pytest.approx(value) for name, value in final.items())
    job_record = sm_session.sagemaker_client.describe_trial_component(TrialComponentName=job_component)
    assert job_record["Source"] == {"SourceArn": job["TrainingJobArn"], "SourceType": "SageMakerTrainingJob"}
    assert job_record["Status"]["PrimaryStatus"] == "Completed"
    assert job_record["OutputArtifacts"]["SageMaker.ModelArtifact"]["Value"] == est.model_data

    # The notebooks' clean-up: the experiment with its run groups and runs.
    from botocore.exceptions import ClientError
    from sagemaker.experiments.experiment import Experiment

    Experiment.load(experiment_name=experiment, sagemaker_session=sm_session)._delete_all(action="--force")
    with pytest.raises(ClientError, match="does not exist"):
        sm_session.sagemaker_client.describe_trial_component(TrialComponentName=run_component)
    with pytest.raises(ClientError, match="does not exist"):
        sm_session.sagemaker_client.describe_experiment(ExperimentName=experiment)
