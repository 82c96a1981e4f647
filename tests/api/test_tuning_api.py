"""Hyperparameter tuning jobs through boto3 against the in-process platform. Child training jobs run on a
scripted executor whose jobs log an objective computed from their hyperparameters (tests/api/tuning_support)."""

from __future__ import annotations

import re

import pytest
from botocore.exceptions import ClientError

from tests.api.tuning_support import (
    BUCKET,
    RANGES,
    TuningExecutor,
    all_children,
    objective,
    tuning_request,
    wait_tuning,
)
from tests.conftest import start_server


@pytest.fixture(scope="module")
def tserver(tmp_path_factory):
    executor = TuningExecutor()
    for server in start_server(tmp_path_factory.mktemp("home"), executor=executor):
        store = server.store()
        store.ensure_bucket(BUCKET)
        store.put_bytes(BUCKET, "data/train/part-0.csv", b"1,0.5\n")
        server.executor = executor
        yield server


@pytest.fixture
def sm(tserver):
    return tserver.client("sagemaker")


def _error(call, **kw) -> tuple[str, str]:
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


# -- create / describe ---------------------------------------------------------------------------------
def test_create_hyper_parameter_tuning_job_random_runs_children_and_picks_best(sm, tserver):
    arn = sm.create_hyper_parameter_tuning_job(**tuning_request("tune-basic"))["HyperParameterTuningJobArn"]
    assert arn.endswith(":hyper-parameter-tuning-job/tune-basic")
    first = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="tune-basic")
    assert first["HyperParameterTuningJobStatus"] == "InProgress"
    # SDK v2's attach deletes this key from the definition's StaticHyperParameters: it must be there.
    static = first["TrainingJobDefinition"]["StaticHyperParameters"]
    assert static["_tuning_objective_metric"] == "validation:rmse"
    d = wait_tuning(sm, "tune-basic")
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"] == {"Completed": 6, "InProgress": 0, "RetryableError": 0,
                                              "NonRetryableError": 0, "Stopped": 0}
    assert d["ObjectiveStatusCounters"] == {"Succeeded": 6, "Pending": 0, "Failed": 0}
    assert d["HyperParameterTuningEndTime"] >= d["CreationTime"]
    children = all_children(sm, "tune-basic")
    assert len(children) == 6
    for c in children:
        assert re.fullmatch(r"tune-basic-\d{3}-[0-9a-f]{8}", c["TrainingJobName"])
        assert c["ObjectiveStatus"] == "Succeeded"
        assert set(c["TunedHyperParameters"]) == {"eta", "max_depth", "booster"}
        assert 0.01 <= float(c["TunedHyperParameters"]["eta"]) <= 1.0
        assert 2 <= int(c["TunedHyperParameters"]["max_depth"]) <= 10
        metric = c["FinalHyperParameterTuningJobObjectiveMetric"]
        assert metric["MetricName"] == "validation:rmse"
        assert metric["Value"] == pytest.approx(objective(c["TunedHyperParameters"]), abs=1e-5)
    best = min(children, key=lambda c: c["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert d["BestTrainingJob"]["TrainingJobName"] == best["TrainingJobName"]
    assert d["BestTrainingJob"]["TunedHyperParameters"] == best["TunedHyperParameters"]


def test_describe_training_job_of_child_has_tuning_job_arn_and_all_hyperparameters(sm, tserver):
    d = wait_tuning(sm, "tune-basic") if _exists(sm, "tune-basic") else None
    if d is None:
        sm.create_hyper_parameter_tuning_job(**tuning_request("tune-basic"))
        d = wait_tuning(sm, "tune-basic")
    child = all_children(sm, "tune-basic")[0]
    job = sm.describe_training_job(TrainingJobName=child["TrainingJobName"])
    assert job["TuningJobArn"] == d["HyperParameterTuningJobArn"]
    assert job["HyperParameters"] == {"num_round": "8", "objective": "reg:squarederror",
                                      "_tuning_objective_metric": "validation:rmse",
                                      **child["TunedHyperParameters"]}
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert tserver.executor.hyperparameters[child["TrainingJobName"]] == job["HyperParameters"]
    listed = sm.list_training_jobs(NameContains="tune-basic-", MaxResults=100)["TrainingJobSummaries"]
    assert {j["TrainingJobName"] for j in listed} >= {child["TrainingJobName"]}


def _exists(sm, name: str) -> bool:
    try:
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        return True
    except ClientError:
        return False


def test_describe_hyper_parameter_tuning_job_missing_is_resource_not_found(sm):
    code, message = _error(sm.describe_hyper_parameter_tuning_job, HyperParameterTuningJobName="nope")
    assert code == "ResourceNotFound" and "nope" in message


def test_create_hyper_parameter_tuning_job_same_name_is_resource_in_use(sm):
    sm.create_hyper_parameter_tuning_job(**tuning_request("tune-dup", max_jobs=1, parallel=1))
    code, _ = _error(sm.create_hyper_parameter_tuning_job, **tuning_request("tune-dup"))
    assert code == "ResourceInUse"
    wait_tuning(sm, "tune-dup")
