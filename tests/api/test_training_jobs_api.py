"""CreateTrainingJob & co. through real boto3 against the in-process server (scripted executor)."""

from __future__ import annotations

import time

import pytest
from botocore.exceptions import ClientError

from opensage.executors.fake import FakeRun
from opensage.runner.jobspec import JobResult
from tests.conftest import training_request, wait_for_status


@pytest.fixture
def sm(fake_server):
    # CreateTrainingJob lists every channel's input (as SageMaker does): the jobs here need real objects.
    store = fake_server.store()
    store.ensure_bucket("bucket1")
    store.put_bytes("bucket1", "data/train/part-1.csv", b"1,0.5\n0,0.1\n")
    return fake_server.client("sagemaker")


def _code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def test_create_training_job_valid_request_returns_arn_and_completes(sm, fake_server):
    arn = sm.create_training_job(**training_request("api-ok"))["TrainingJobArn"]
    assert arn == "arn:aws:sagemaker:us-east-1:000000000000:training-job/api-ok"
    d = wait_for_status(sm, "api-ok")
    assert d["TrainingJobStatus"] == "Completed"
    assert d["SecondaryStatus"] == "Completed"
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert d["LastModifiedTime"] >= d["CreationTime"]
    assert d["ResourceConfig"]["InstanceCount"] == 1


def test_create_training_job_duplicate_name_is_resource_in_use(sm):
    sm.create_training_job(**training_request("api-dup"))
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**training_request("api-dup"))
    assert _code(e.value) == "ResourceInUse"
    assert "api-dup" in str(e.value)


def test_describe_training_job_missing_is_validation_exception(sm):
    with pytest.raises(ClientError) as e:
        sm.describe_training_job(TrainingJobName="does-not-exist")
    assert _code(e.value) == "ValidationException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Requested resource not found" in str(e.value)


def test_stop_training_job_missing_is_resource_not_found(sm):
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.stop_training_job(TrainingJobName="nope-nope")


def test_create_training_job_bad_name_pattern_is_aws_worded(sm):
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**training_request("bad_name!"))
    msg = e.value.response["Error"]["Message"]
    assert _code(e.value) == "ValidationException"
    assert msg.startswith("1 validation error detected: Value 'bad_name!' at 'trainingJobName'")
    assert "regular expression pattern" in msg


def test_create_training_job_enum_and_max_violations_listed_together(sm):
    req = training_request("api-enum")
    req["AlgorithmSpecification"]["TrainingInputMode"] = "Bogus"
    req["HyperParameters"] = {"num_round": "x" * 2600}
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    msg = e.value.response["Error"]["Message"]
    assert msg.startswith("2 validation errors detected")
    assert "algorithmSpecification.trainingInputMode" in msg and "enum value set" in msg
    assert "hyperParameters.num_round.value" in msg and "less than or equal to 2500" in msg


def test_list_training_jobs_max_results_over_limit_is_rejected(sm):
    with pytest.raises(ClientError) as e:
        sm.list_training_jobs(MaxResults=1000)
    assert "less than or equal to 100" in str(e.value)


def test_create_training_job_unknown_image_is_accepted_and_fails_at_once_naming_it(sm):
    """SageMaker accepts any image at Create; here the job fails at once saying what runs instead."""
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own:latest"
    req = training_request("api-img")
    req["AlgorithmSpecification"]["TrainingImage"] = image
    arn = sm.create_training_job(**req)["TrainingJobArn"]
    assert arn.endswith("training-job/api-img")
    d = wait_for_status(sm, "api-img", timeout=30)
    assert d["TrainingJobStatus"] == "Failed"
    assert image in d["FailureReason"] and "sagemaker-scikit-learn" in d["FailureReason"]
    assert d["FailureReason"].startswith("ClientError:")


def test_create_training_job_empty_input_prefix_is_validation_exception(sm):
    req = training_request("api-noinput")
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://bucket1/data/missing"
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    assert _code(e.value) == "ValidationException"
    assert str(e.value).endswith(
        'No S3 objects found under S3 URL "s3://bucket1/data/missing" given in input data source. Please '
        'ensure that the bucket exists in the selected region (us-east-1), that objects exist under that S3 '
        'prefix, and that the role "arn:aws:iam::000000000000:role/SageMakerRole" has "s3:ListBucket" '
        'permissions on bucket "bucket1".')


def test_create_training_job_missing_bucket_is_validation_exception(sm):
    req = training_request("api-nobucket")
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://no-such-bucket-x/data"
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    assert _code(e.value) == "ValidationException"
    assert 'on bucket "no-such-bucket-x"' in str(e.value)


def test_create_training_job_malformed_s3_uri_names_the_field(sm):
    req = training_request("api-s3")
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = "http://nope/x"
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    assert "inputDataConfig.1.member.dataSource.s3DataSource.s3Uri" in str(e.value)


def test_create_training_job_missing_resource_config_is_rejected(sm):
    req = training_request("api-norc")
    del req["ResourceConfig"]
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    assert "resourceConfig" in str(e.value)


def test_failed_job_reports_failure_reason(sm, fake_server):
    fake_server.platform.training.executor.script(
        "api-fail", FakeRun(result=JobResult(exit_code=1, failure_reason="ClientError: bad csv line 3")))
    sm.create_training_job(**training_request("api-fail"))
    d = wait_for_status(sm, "api-fail")
    assert d["TrainingJobStatus"] == "Failed"
    assert d["FailureReason"] == "ClientError: bad csv line 3"


def test_stop_training_job_running_job_becomes_stopped(sm, fake_server):
    fake_server.platform.training.executor.script("api-stop", FakeRun(keep_running=True))
    sm.create_training_job(**training_request("api-stop"))
    time.sleep(0.5)
    sm.stop_training_job(TrainingJobName="api-stop")
    assert sm.describe_training_job(TrainingJobName="api-stop")["TrainingJobStatus"] in ("Stopping", "Stopped")
    d = wait_for_status(sm, "api-stop")
    assert d["TrainingJobStatus"] == "Stopped"
    with pytest.raises(ClientError) as e:
        sm.stop_training_job(TrainingJobName="api-stop")
    assert "status Stopped" in str(e.value)


def test_list_training_jobs_pages_filter_first_without_gaps(sm):
    names = [f"page-{i:02d}" for i in range(7)]
    for n in names:
        sm.create_training_job(**training_request(n))
    seen, token = [], None
    while True:
        kw = {"NameContains": "page-", "MaxResults": 3, "SortBy": "Name", "SortOrder": "Descending"}
        if token:
            kw["NextToken"] = token
        page = sm.list_training_jobs(**kw)
        assert len(page["TrainingJobSummaries"]) <= 3
        seen += [s["TrainingJobName"] for s in page["TrainingJobSummaries"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == sorted(names, reverse=True)
    paginator = sm.get_paginator("list_training_jobs")
    all_names = [s["TrainingJobName"] for p in paginator.paginate(NameContains="page-", PaginationConfig={
        "PageSize": 2}) for s in p["TrainingJobSummaries"]]
    assert all_names == names  # CreationTime ascending by default


def test_list_training_jobs_status_filter(sm):
    wait_for_status(sm, "page-00")
    completed = sm.list_training_jobs(StatusEquals="Completed", MaxResults=100)["TrainingJobSummaries"]
    assert completed and all(s["TrainingJobStatus"] == "Completed" for s in completed)


def test_tags_add_list_delete_round_trip(sm):
    arn = sm.create_training_job(**training_request("api-tags", Tags=[{"Key": "team", "Value": "a"}]))[
        "TrainingJobArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "b"}])
    tags = sm.list_tags(ResourceArn=arn)["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"env": "dev", "team": "b"}
    sm.delete_tags(ResourceArn=arn, TagKeys=["env"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "b"}]


def test_unimplemented_operation_names_it(sm):
    with pytest.raises(ClientError) as e:
        sm.describe_notebook_instance(NotebookInstanceName="nb")
    assert "DescribeNotebookInstance" in str(e.value)


def test_describe_training_job_builtin_image_lists_its_metric_definitions(sm):
    """SageMaker fills AlgorithmSpecification.MetricDefinitions with a built-in algorithm's own metrics;
    script mode keeps only the user's. ModelArtifacts is there from the start (botocore marks it required)."""
    sm.create_training_job(**training_request("metric-defs-builtin"))
    described = sm.describe_training_job(TrainingJobName="metric-defs-builtin")
    names = {d["Name"] for d in described["AlgorithmSpecification"]["MetricDefinitions"]}
    assert {"train:rmse", "validation:rmse", "validation:logloss"} <= names
    assert described["ModelArtifacts"]["S3ModelArtifacts"].endswith("/metric-defs-builtin/output/model.tar.gz")
    script = training_request("metric-defs-script")
    script["HyperParameters"] = {"sagemaker_program": "train.py",
                                 "sagemaker_submit_directory": "s3://bucket1/code/sourcedir.tar.gz"}
    sm.create_training_job(**script)
    spec = sm.describe_training_job(TrainingJobName="metric-defs-script")["AlgorithmSpecification"]
    assert "MetricDefinitions" not in spec


def test_create_training_job_gzip_channel_in_file_mode_is_refused_as_sagemaker_does(sm):
    req = training_request("api-gzip-file")
    req["InputDataConfig"][0]["CompressionType"] = "Gzip"
    with pytest.raises(ClientError) as e:
        sm.create_training_job(**req)
    assert _code(e.value) == "ValidationException"
    channel = req["InputDataConfig"][0]["ChannelName"]
    assert e.value.response["Error"]["Message"] == (
        f"Invalid compression type for channel {channel}: File mode only supports NONE, got Gzip instead")
    # The channel's own InputMode overrides the job's (the SDK's TrainingInput(input_mode="Pipe")).
    req["InputDataConfig"][0]["InputMode"] = "Pipe"
    sm.create_training_job(**req)
