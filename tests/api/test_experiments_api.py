"""SageMaker Experiments through real boto3 (sagemaker and sagemaker-metrics) against the in-process platform."""

from __future__ import annotations

import datetime
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("experiments-home"))


@pytest.fixture
def sm(server):
    return server.client("sagemaker")


def _code(raised: pytest.ExceptionInfo) -> tuple[str, str]:
    error = raised.value.response["Error"]
    return error["Code"], error["Message"]


def test_experiment_trial_component_lifecycle_associations_and_lists(sm):
    arn = sm.create_experiment(ExperimentName="Churn", Description="churn models", Tags=[
        {"Key": "team", "Value": "ds"}])["ExperimentArn"]
    assert arn.endswith(":experiment/churn")
    with pytest.raises(ClientError) as raised:
        sm.create_experiment(ExperimentName="churn")
    assert _code(raised)[0] == "ValidationException" and "already exists" in _code(raised)[1]
    described = sm.describe_experiment(ExperimentName="Churn")
    assert (described["ExperimentName"], described["DisplayName"], described["Description"]) == (
        "Churn", "Churn", "churn models")
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ds"}]
    sm.update_experiment(ExperimentName="Churn", DisplayName="Churn-2026")
    assert sm.describe_experiment(ExperimentName="Churn")["DisplayName"] == "Churn-2026"

    with pytest.raises(ClientError) as raised:
        sm.create_trial(TrialName="t", ExperimentName="missing")
    assert _code(raised)[0] == "ResourceNotFound"
    sm.create_trial(TrialName="churn-xgb", ExperimentName="Churn")
    sm.create_trial(TrialName="churn-ll", ExperimentName="Churn")
    assert sm.describe_trial(TrialName="churn-xgb")["ExperimentName"] == "Churn"

    start = datetime.datetime(2026, 11, 28, 10, 0, tzinfo=datetime.UTC)
    sm.create_trial_component(TrialComponentName="xgb-depth-3", Status={"PrimaryStatus": "InProgress"},
                              StartTime=start, Parameters={"max_depth": {"NumberValue": 3},
                                                           "objective": {"StringValue": "binary:logistic"}})
    sm.create_trial_component(TrialComponentName="unrelated")
    sm.associate_trial_component(TrialComponentName="xgb-depth-3", TrialName="churn-xgb")
    sm.associate_trial_component(TrialComponentName="xgb-depth-3", TrialName="churn-ll")
    sm.update_trial_component(
        TrialComponentName="xgb-depth-3", Status={"PrimaryStatus": "Completed", "Message": "done"},
        EndTime=start + datetime.timedelta(minutes=5), Parameters={"eta": {"NumberValue": 0.3}},
        ParametersToRemove=["objective"], OutputArtifacts={"model": {"Value": "s3://b/model.tar.gz"}})
    tc = sm.describe_trial_component(TrialComponentName="xgb-depth-3")
    assert tc["Parameters"] == {"max_depth": {"NumberValue": 3.0}, "eta": {"NumberValue": 0.3}}
    assert tc["Status"] == {"PrimaryStatus": "Completed", "Message": "done"}
    assert tc["StartTime"] == start and tc["EndTime"] - tc["StartTime"] == datetime.timedelta(minutes=5)
    assert tc["OutputArtifacts"] == {"model": {"Value": "s3://b/model.tar.gz"}}

    names = lambda listed, key, field: [s[field] for s in listed[key]]  # noqa: E731
    assert names(sm.list_trial_components(TrialName="churn-xgb"), "TrialComponentSummaries",
                 "TrialComponentName") == ["xgb-depth-3"]
    assert names(sm.list_trial_components(ExperimentName="Churn"), "TrialComponentSummaries",
                 "TrialComponentName") == ["xgb-depth-3"]
    assert sorted(names(sm.list_trials(TrialComponentName="xgb-depth-3"), "TrialSummaries", "TrialName")) == [
        "churn-ll", "churn-xgb"]
    assert names(sm.list_trials(ExperimentName="Churn", SortBy="Name", SortOrder="Ascending"),
                 "TrialSummaries", "TrialName") == ["churn-ll", "churn-xgb"]
    first = sm.list_trial_components(MaxResults=1)  # newest first by default
    assert names(first, "TrialComponentSummaries", "TrialComponentName") == ["unrelated"]
    assert names(sm.list_trial_components(MaxResults=1, NextToken=first["NextToken"]), "TrialComponentSummaries",
                 "TrialComponentName") == ["xgb-depth-3"]
    with pytest.raises(ClientError) as raised:
        sm.list_trial_components(ExperimentName="Churn", TrialName="churn-xgb")
    assert _code(raised)[0] == "ValidationException"

    # Deleting goes bottom up, as in SageMaker: components out of their trials, trials, then the experiment.
    with pytest.raises(ClientError) as raised:
        sm.delete_trial_component(TrialComponentName="xgb-depth-3")
    assert "disassociate" in _code(raised)[1]
    with pytest.raises(ClientError) as raised:
        sm.delete_trial(TrialName="churn-xgb")
    assert "has trial components" in _code(raised)[1]
    with pytest.raises(ClientError) as raised:
        sm.delete_experiment(ExperimentName="Churn")
    assert "delete them" in _code(raised)[1]
    sm.disassociate_trial_component(TrialComponentName="xgb-depth-3", TrialName="churn-ll")
    sm.disassociate_trial_component(TrialComponentName="xgb-depth-3", TrialName="churn-xgb")
    with pytest.raises(ClientError) as raised:
        sm.disassociate_trial_component(TrialComponentName="xgb-depth-3", TrialName="churn-xgb")
    assert _code(raised)[0] == "ResourceNotFound"
    sm.delete_trial(TrialName="churn-xgb")
    sm.delete_trial(TrialName="churn-ll")
    sm.delete_trial_component(TrialComponentName="xgb-depth-3")
    sm.delete_experiment(ExperimentName="Churn")
    with pytest.raises(ClientError) as raised:
        sm.describe_experiment(ExperimentName="Churn")
    assert _code(raised)[0] == "ResourceNotFound"


def test_batch_put_metrics_summarised_in_describe_and_answered_by_batch_get_metrics(sm, server):
    metrics = server.client("sagemaker-metrics")
    sm.create_trial_component(TrialComponentName="training-run")
    now = time.time()
    data = [{"MetricName": "train:loss", "Timestamp": now + i, "Step": i, "Value": v}
            for i, v in enumerate([0.9, 0.5, 0.3, 0.2])]
    assert metrics.batch_put_metrics(TrialComponentName="training-run", MetricData=data).get("Errors", []) == []
    metrics.batch_put_metrics(TrialComponentName="training-run", MetricData=[
        {"MetricName": "validation:auc", "Timestamp": now, "Step": 3, "Value": 0.91}])
    summaries = {m["MetricName"]: m for m in sm.describe_trial_component(TrialComponentName="training-run")["Metrics"]}
    loss = summaries["train:loss"]
    assert (loss["Count"], loss["Min"], loss["Max"], loss["Last"]) == (4, 0.2, 0.9, 0.2)
    assert loss["Avg"] == pytest.approx(0.475) and loss["StdDev"] == pytest.approx(0.3095, abs=1e-4)
    assert summaries["validation:auc"]["Last"] == 0.91
    arn = sm.describe_trial_component(TrialComponentName="training-run")["TrialComponentArn"]
    got = metrics.batch_get_metrics(MetricQueries=[
        {"MetricName": "train:loss", "ResourceArn": arn, "MetricStat": "Last", "Period": "IterationNumber",
         "XAxisType": "IterationNumber"},
        {"MetricName": "nothing", "ResourceArn": arn, "MetricStat": "Avg", "Period": "OneMinute",
         "XAxisType": "Timestamp"}])["MetricQueryResults"]
    assert got[0]["Status"] == "Complete" and got[0]["XAxisValues"] == [0, 1, 2, 3]
    assert got[0]["MetricValues"] == [0.9, 0.5, 0.3, 0.2]
    assert got[1]["Status"] == "MetricNotFound"
    with pytest.raises(ClientError) as raised:
        metrics.batch_put_metrics(TrialComponentName="no-such-run", MetricData=data[:1])
    assert _code(raised)[0] == "ResourceNotFound"


def test_lineage_artifacts_and_associations_with_a_trial_component(sm):
    tc = sm.create_trial_component(TrialComponentName="evaluation")["TrialComponentArn"]
    arn = sm.create_artifact(ArtifactName="roc", ArtifactType="ROCCurve",
                             Source={"SourceUri": "s3://b/roc.json", "SourceTypes": [
                                 {"SourceIdType": "S3ETag", "Value": "abc"}]})["ArtifactArn"]
    assert ":artifact/" in arn
    assert sm.describe_artifact(ArtifactArn=arn)["Source"]["SourceUri"] == "s3://b/roc.json"
    assert [a["ArtifactArn"] for a in sm.list_artifacts(SourceUri="s3://b/roc.json")["ArtifactSummaries"]] == [arn]
    sm.add_association(SourceArn=tc, DestinationArn=arn, AssociationType="Produced")
    with pytest.raises(ClientError) as raised:
        sm.add_association(SourceArn=tc, DestinationArn=arn, AssociationType="Produced")
    assert _code(raised)[0] == "ValidationException" and "already exists" in _code(raised)[1]
    with pytest.raises(ClientError) as raised:
        sm.add_association(SourceArn=tc, DestinationArn=arn.replace("artifact/", "artifact/0"))
    assert _code(raised)[0] == "ResourceNotFound"
    [summary] = sm.list_associations(DestinationArn=arn)["AssociationSummaries"]
    assert (summary["SourceArn"], summary["AssociationType"], summary["DestinationType"],
            summary["DestinationName"]) == (tc, "Produced", "ROCCurve", "roc")
    sm.delete_artifact(ArtifactArn=arn)
    assert sm.list_associations(SourceArn=tc)["AssociationSummaries"] == []
    with pytest.raises(ClientError) as raised:
        sm.describe_artifact(ArtifactArn=arn)
    assert _code(raised)[0] == "ResourceNotFound"
