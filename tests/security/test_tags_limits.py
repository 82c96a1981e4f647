"""Issue 7 item 12: a resource holds at most 50 user tags, and keys starting with "aws:" are AWS's."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.conftest import training_request


@pytest.fixture(scope="module")
def sm(fake_server):
    return fake_server.client("sagemaker")


def _tags(start: int, stop: int) -> list[dict[str, str]]:
    return [{"Key": f"k{i:02d}", "Value": "v"} for i in range(start, stop)]


def _validation_error(call, **kw) -> str:
    with pytest.raises(ClientError) as e:
        call(**kw)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["Error"]["Code"] == "ValidationException"
    return e.value.response["Error"]["Message"]


def test_add_tags_beyond_50_per_resource_is_validation_exception(sm):
    arn = sm.create_training_job(**training_request("tags-limit", Tags=_tags(0, 30)))["TrainingJobArn"]
    sm.add_tags(ResourceArn=arn, Tags=_tags(30, 50))
    message = _validation_error(sm.add_tags, ResourceArn=arn, Tags=_tags(50, 51))
    assert "at most 50" in message
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "k00", "Value": "new"}])  # overwriting adds no tag
    tags = sm.list_tags(ResourceArn=arn, MaxResults=100)["Tags"]
    assert len(tags) == 50 and {"Key": "k00", "Value": "new"} in tags


def test_add_tags_over_the_limit_writes_nothing(sm):
    arn = sm.create_training_job(**training_request("tags-atomic", Tags=_tags(0, 45)))["TrainingJobArn"]
    _validation_error(sm.add_tags, ResourceArn=arn, Tags=[{"Key": "k00", "Value": "changed"}, *_tags(45, 51)])
    tags = sm.list_tags(ResourceArn=arn, MaxResults=100)["Tags"]
    assert len(tags) == 45 and {"Key": "k00", "Value": "v"} in tags


@pytest.mark.parametrize("key", ["aws:cloudformation:stack-name", "AWS:x", "aWs:y"])
def test_add_tags_aws_prefixed_key_is_validation_exception(sm, key):
    name = "tags-aws-" + key.replace(":", "-").lower()
    arn = sm.create_training_job(**training_request(name))["TrainingJobArn"]
    message = _validation_error(sm.add_tags, ResourceArn=arn, Tags=[{"Key": "ok", "Value": "v"},
                                                                    {"Key": key, "Value": "v"}])
    assert "aws: prefixed tag key" in message
    assert sm.list_tags(ResourceArn=arn)["Tags"] == []


def test_create_with_an_aws_tag_key_creates_nothing(sm):
    """The tag check comes before the resource exists: a refused Create leaves no model / job behind."""
    reserved = [{"Key": "aws:owner", "Value": "x"}]
    _validation_error(sm.create_model, ModelName="tags-reserved-model", Tags=reserved,
                      PrimaryContainer={"Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                                        "ModelDataUrl": "s3://bucket/model.tar.gz"},
                      ExecutionRoleArn="arn:aws:iam::000000000000:role/R")
    with pytest.raises(ClientError):
        sm.describe_model(ModelName="tags-reserved-model")
    _validation_error(sm.create_training_job, **training_request("tags-reserved-job", Tags=reserved))
    with pytest.raises(ClientError):
        sm.describe_training_job(TrainingJobName="tags-reserved-job")
