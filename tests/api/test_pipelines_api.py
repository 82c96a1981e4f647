"""SageMaker Pipelines through real boto3 against the in-process control plane. Child processing / training
jobs run on the fake executor (they complete at once, scripted), so these tests exercise the API and the
engine, not the jobs (tests/e2e/test_sdk_v2_pipelines.py runs real ones through the SDK)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from opensage.executors.fake import FakeExecutor, FakeRun
from opensage.runner.jobspec import JobResult
from tests.conftest import ROLE, XGB_IMAGE, start_server

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310"
BUCKET = "pipes"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("pipelines-home")


@pytest.fixture(scope="module")
def executor():
    return FakeExecutor()


@pytest.fixture(scope="module")
def server(home, executor):
    for srv in start_server(home, executor=executor):
        store = srv.store()
        store.ensure_bucket(BUCKET)
        store.put_bytes(BUCKET, "raw/data.csv", b"1,2\n3,4\n")
        store.put_bytes(BUCKET, "code/prep.py", b"print('hi')\n")
        yield srv


@pytest.fixture
def sm(server):
    return server.client("sagemaker")


def processing_step(name: str, inputs_from: str | None = None, output: str = "out", **extra) -> dict:
    source = ({"Get": f"Steps.{inputs_from}.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}
              if inputs_from else f"s3://{BUCKET}/raw")
    return {
        "Name": name, "Type": "Processing", **extra,
        "Arguments": {
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                      "VolumeSizeInGB": 30}},
            "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["python3", "/opt/ml/processing/code/prep.py"]},
            "RoleArn": ROLE,
            "ProcessingInputs": [
                {"InputName": "code", "S3Input": {"S3Uri": f"s3://{BUCKET}/code/prep.py", "S3DataType": "S3Prefix",
                                                  "LocalPath": "/opt/ml/processing/code"}},
                {"InputName": "data", "S3Input": {"S3Uri": source, "S3DataType": "S3Prefix",
                                                  "LocalPath": "/opt/ml/processing/input"}}],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": output, "S3Output": {
                "S3Uri": {"Std:Join": {"On": "/", "Values": [f"s3://{BUCKET}/runs",
                                                             {"Get": "Execution.PipelineExecutionId"}, name]}},
                "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600}}}


def definition(steps: list, parameters: list | None = None) -> str:
    return json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": parameters or [],
                       "PipelineExperimentConfig": None, "Steps": steps})


def create(sm, name: str, steps: list, parameters: list | None = None, **kw) -> str:
    return sm.create_pipeline(PipelineName=name, RoleArn=ROLE, PipelineDefinition=definition(steps, parameters),
                              **kw)["PipelineArn"]


def wait_execution(sm, arn: str, timeout: float = 60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        if d["PipelineExecutionStatus"] not in ("Executing", "Stopping"):
            return d
        time.sleep(0.1)
    raise AssertionError(f"{arn} still {d['PipelineExecutionStatus']}")


def steps_by_name(sm, arn: str) -> dict[str, dict]:
    return {s["StepName"]: s for s in sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)
            ["PipelineExecutionSteps"]}


def wait_step(sm, arn: str, step: str, status: str, timeout: float = 30.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = steps_by_name(sm, arn).get(step)
        if found and found["StepStatus"] == status:
            return found
        time.sleep(0.1)
    raise AssertionError(f"step {step} never {status}: {steps_by_name(sm, arn)}")


# -- pipelines ----------------------------------------------------------------------------------------------
def test_create_pipeline_then_describe_list_update_delete(sm):
    arn = create(sm, "CrudPipe", [processing_step("Prep")], PipelineDescription="first",
                 Tags=[{"Key": "team", "Value": "ml"}])
    assert arn.endswith(":pipeline/crudpipe")
    d = sm.describe_pipeline(PipelineName="CrudPipe")
    assert d["PipelineStatus"] == "Active" and d["PipelineDescription"] == "first"
    assert json.loads(d["PipelineDefinition"])["Steps"][0]["Name"] == "Prep"
    updated = sm.update_pipeline(PipelineName="CrudPipe",
                                 PipelineDefinition=definition([processing_step("Prep2")]))
    assert updated["PipelineVersionId"] == 2
    assert json.loads(sm.describe_pipeline(PipelineName=arn)["PipelineDefinition"])["Steps"][0]["Name"] == "Prep2"
    v1 = sm.describe_pipeline(PipelineName="CrudPipe", PipelineVersionId=1)["PipelineDefinition"]
    assert json.loads(v1)["Steps"][0]["Name"] == "Prep"
    names = [p["PipelineName"] for p in sm.list_pipelines(PipelineNamePrefix="Crud")["PipelineSummaries"]]
    assert names == ["CrudPipe"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    sm.delete_pipeline(PipelineName="CrudPipe")
    with pytest.raises(ClientError) as err:
        sm.describe_pipeline(PipelineName="CrudPipe")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


def test_create_pipeline_existing_name_is_validation_exception_saying_already_exists(sm):
    create(sm, "DupPipe", [processing_step("Prep")])
    with pytest.raises(ClientError) as err:
        create(sm, "DupPipe", [processing_step("Prep")])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "already exists" in err.value.response["Error"]["Message"]  # what Pipeline.upsert matches


def test_create_pipeline_same_client_request_token_returns_same_arn(sm):
    token = str(uuid.uuid4())
    first = create(sm, "TokenPipe", [processing_step("Prep")], ClientRequestToken=token)
    assert create(sm, "TokenPipe", [processing_step("Prep")], ClientRequestToken=token) == first


def test_create_pipeline_from_s3_location_reads_the_object_store(sm, server):
    server.store().put_bytes(BUCKET, "defs/p.json", definition([processing_step("Prep")]).encode())
    sm.create_pipeline(PipelineName="S3Pipe", RoleArn=ROLE,
                       PipelineDefinitionS3Location={"Bucket": BUCKET, "ObjectKey": "defs/p.json"})
    assert "Prep" in sm.describe_pipeline(PipelineName="S3Pipe")["PipelineDefinition"]


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, words", [
    ('{"Version": "2020-12-01", "Steps": [', "not valid JSON"),
    (definition([processing_step("B", inputs_from="Nope")]), "step 'Nope'"),
    (definition([{**processing_step("A"), "Arguments": {
        **processing_step("A")["Arguments"],
        "Environment": {"X": {"Get": "Steps.B.ProcessingOutputConfig.Outputz"}}}},
        processing_step("B")]), "has no member 'Outputz' at 'ProcessingOutputConfig'"),
    (definition([processing_step("A", inputs_from="B"), processing_step("B", inputs_from="A")]),
     "dependency cycle"),
    (definition([processing_step("A")], [{"Name": "N", "Type": "Integer", "DefaultValue": "x"}]), "Integer"),
    (definition([{**processing_step("A"), "DependsOn": ["Ghost"]}]), "Ghost"),
])
def test_create_pipeline_bad_definition_is_validation_exception_saying_where(sm, text, words):
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="BadPipe", RoleArn=ROLE, PipelineDefinition=text)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert words in err.value.response["Error"]["Message"]


def test_start_pipeline_execution_wrong_parameter_type_is_validation_exception(sm):
    create(sm, "TypedPipe", [processing_step("Prep")],
           [{"Name": "Count", "Type": "Integer", "DefaultValue": 1}])
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName="TypedPipe",
                                    PipelineParameters=[{"Name": "Count", "Value": "three"}])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "Count" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName="TypedPipe", PipelineParameters=[{"Name": "Nope", "Value": "1"}])
    assert "Nope" in err.value.response["Error"]["Message"]


def test_start_pipeline_execution_missing_pipeline_is_resource_not_found(sm):
    with pytest.raises(ClientError) as err:
        sm.start_pipeline_execution(PipelineName="NoSuchPipe")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


# -- executions ---------------------------------------------------------------------------------------------
def test_start_pipeline_execution_chain_succeeds_with_child_jobs_and_metadata(sm):
    create(sm, "ChainPipe", [processing_step("Prep"), processing_step("Next", inputs_from="Prep")],
           [{"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5}])
    arn = sm.start_pipeline_execution(PipelineName="ChainPipe",
                                      PipelineParameters=[{"Name": "Threshold", "Value": "0.7"}])["PipelineExecutionArn"]
    exec_id = arn.rsplit("/", 1)[1]
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    assert [s["StepName"] for s in steps] == ["Next", "Prep"]  # newest first
    for s in steps:
        assert s["StepStatus"] == "Succeeded" and s["AttemptCount"] == 1 and s["EndTime"] >= s["StartTime"]
        job_arn = s["Metadata"]["ProcessingJob"]["Arn"]
        assert f"processing-job/pipelines-{exec_id}-{s['StepName'].lower()}-" in job_arn
    nxt = sm.describe_processing_job(ProcessingJobName=steps[0]["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1])
    prep_uri = f"s3://{BUCKET}/runs/{exec_id}/Prep"
    assert nxt["ProcessingInputs"][1]["S3Input"]["S3Uri"] == prep_uri
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert params == [{"Name": "Threshold", "Value": "0.7"}]
    summaries = sm.list_pipeline_executions(PipelineName="ChainPipe")["PipelineExecutionSummaries"]
    assert summaries[0]["PipelineExecutionArn"] == arn
    definition_text = sm.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)["PipelineDefinition"]
    assert "Prep" in definition_text


def test_start_pipeline_execution_same_token_returns_same_execution(sm):
    create(sm, "IdemExec", [processing_step("Prep")])
    token = str(uuid.uuid4())
    a = sm.start_pipeline_execution(PipelineName="IdemExec", ClientRequestToken=token)["PipelineExecutionArn"]
    b = sm.start_pipeline_execution(PipelineName="IdemExec", ClientRequestToken=token)["PipelineExecutionArn"]
    assert a == b
    assert len(sm.list_pipeline_executions(PipelineName="IdemExec")["PipelineExecutionSummaries"]) == 1
