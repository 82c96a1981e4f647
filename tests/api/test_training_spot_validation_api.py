"""CreateTrainingJob: SageMaker's checks of MaxWaitTimeInSeconds (managed spot) and InstanceGroups."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.conftest import training_request


def _create_error(sm, **overrides) -> str:
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**training_request("spot-check", **overrides))
    assert e.value.response["Error"]["Code"] == "ValidationException"
    return e.value.response["Error"]["Message"]


def test_create_training_job_max_wait_without_spot_is_validation_exception(fake_server):
    sm = fake_server.client("sagemaker")
    message = _create_error(sm, StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200})
    assert message == "Invalid MaxWaitTimeInSeconds. It is only supported when EnableManagedSpotTraining is set to true"


@pytest.mark.parametrize("stopping", [{"MaxRuntimeInSeconds": 600},
                                      {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 300}],
                         ids=["missing", "below-max-runtime"])
def test_create_training_job_spot_without_sufficient_max_wait_is_validation_exception(fake_server, stopping):
    sm = fake_server.client("sagemaker")
    message = _create_error(sm, EnableManagedSpotTraining=True, StoppingCondition=stopping)
    assert message.startswith("Invalid MaxWaitTimeInSeconds. It must be present and be greater than or equal")


def test_create_training_job_instance_groups_with_instance_count_is_validation_exception(fake_server):
    sm = fake_server.client("sagemaker")
    message = _create_error(sm, ResourceConfig={
        "InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 10,
        "InstanceGroups": [{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "g1"}]})
    assert "InstanceGroups" in message


def test_create_training_job_spot_with_max_wait_is_accepted(fake_server):
    sm = fake_server.client("sagemaker")
    sm.create_training_job(**training_request("spot-ok", EnableManagedSpotTraining=True, StoppingCondition={
        "MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200}))
    assert sm.describe_training_job(TrainingJobName="spot-ok")["EnableManagedSpotTraining"] is True
