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
QUEUE = "q"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("pipelines-home")


class StepExecutor(FakeExecutor):
    """The fake executor scripted by pipeline step: a job named pipelines-<id>-<step>-<random> gets the run
    registered for <step> (lower-case), else the default (exit 0 at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_step: dict[str, FakeRun] = {}
        self.handles: dict[str, str] = {}  # job name -> handle

    def submit(self, jobdir):
        from opensage.runner.jobspec import JobSpec

        name = JobSpec.read(jobdir).job_name
        for step, run in self.by_step.items():
            if f"-{step}-" in name:
                self.scripts[name] = run
        handle = super().submit(jobdir)
        self.handles[name] = handle
        return handle


@pytest.fixture(scope="module")
def executor():
    return StepExecutor()


@pytest.fixture(scope="module")
def server(home, executor):
    for srv in start_server(home, executor=executor):
        store = srv.store()
        store.ensure_bucket(BUCKET)
        store.put_bytes(BUCKET, "raw/data.csv", b"1,2\n3,4\n")
        store.put_bytes(BUCKET, "code/prep.py", b"print('hi')\n")
        srv.client("sqs").create_queue(QueueName=QUEUE)  # callback steps' SqsQueueUrl
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
    versions = sm.list_pipeline_versions(PipelineName="CrudPipe")["PipelineVersionSummaries"]
    assert [v["PipelineVersionId"] for v in versions] == [2, 1]
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


def eval_step(name: str, tag_param: str = "RunTag") -> dict:
    step = processing_step(name, inputs_from="Prep", PropertyFiles=[
        {"PropertyFileName": "EvaluationReport", "OutputName": "out", "FilePath": "evaluation.json"}])
    step["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = {
        "Std:Join": {"On": "/", "Values": [f"s3://{BUCKET}/eval", {"Get": f"Parameters.{tag_param}"}]}}
    return step


def condition_pipeline(threshold_type: str = "Float") -> tuple[list, list]:
    register_like = processing_step("Deploy", inputs_from="Prep")
    fail = {"Name": "TooWeak", "Type": "Fail", "Arguments": {"ErrorMessage": {"Std:Join": {
        "On": " ", "Values": ["accuracy", {"Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.EvaluationReport"},
            "Path": "metrics.accuracy.value"}}, "is below", {"Get": "Parameters.MinAccuracy"},
            "strict:", {"Get": "Parameters.Strict"}]}}}}
    check = {"Name": "CheckAccuracy", "Type": "Condition", "Arguments": {
        "Conditions": [{"Type": "GreaterThanOrEqualTo", "LeftValue": {"Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.Eval.PropertyFiles.EvaluationReport"},
            "Path": "metrics.accuracy.value"}}, "RightValue": {"Get": "Parameters.MinAccuracy"}},
            {"Type": "Not", "Condition": {"Type": "In", "QueryValue": {"Get": "Parameters.RunTag"},
                                          "Values": ["forbidden", "blocked"]}},
            {"Type": "Or", "Conditions": [{"Type": "Equals", "LeftValue": {"Get": "Parameters.Strict"},
                                           "RightValue": False},
                                          {"Type": "LessThan", "LeftValue": 1, "RightValue": 2}]}],
        "IfSteps": [register_like], "ElseSteps": [fail]}}
    steps = [processing_step("Prep"), eval_step("Eval"), check]
    params = [{"Name": "RunTag", "Type": "String"},
              {"Name": "MinAccuracy", "Type": threshold_type, "DefaultValue": 0.8},
              {"Name": "Strict", "Type": "Boolean", "DefaultValue": False}]
    return steps, params


def test_condition_step_json_get_true_runs_if_branch(sm, server):
    steps, params = condition_pipeline()
    create(sm, "CondTrue", steps, params)
    server.store().put_bytes(BUCKET, "eval/good/evaluation.json",
                             json.dumps({"metrics": {"accuracy": {"value": 0.93}}}).encode())
    arn = sm.start_pipeline_execution(PipelineName="CondTrue", PipelineParameters=[
        {"Name": "RunTag", "Value": "good"}])["PipelineExecutionArn"]
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    steps = steps_by_name(sm, arn)
    assert steps["CheckAccuracy"]["Metadata"] == {"Condition": {"Outcome": "True"}}
    assert steps["Deploy"]["StepStatus"] == "Succeeded"
    assert "TooWeak" not in steps  # the branch not taken does not run


def test_condition_step_false_runs_fail_step_with_join_message(sm, server):
    steps, params = condition_pipeline()
    create(sm, "CondFalse", steps, params)
    server.store().put_bytes(BUCKET, "eval/weak/evaluation.json",
                             json.dumps({"metrics": {"accuracy": {"value": 0.5}}}).encode())
    arn = sm.start_pipeline_execution(PipelineName="CondFalse", PipelineParameters=[
        {"Name": "RunTag", "Value": "weak"}, {"Name": "MinAccuracy", "Value": "0.75"}])["PipelineExecutionArn"]
    d = wait_execution(sm, arn)
    assert d["PipelineExecutionStatus"] == "Failed"
    assert "Step failure: One or multiple steps failed" in d["FailureReason"]
    steps = steps_by_name(sm, arn)
    assert steps["CheckAccuracy"]["Metadata"]["Condition"]["Outcome"] == "False"
    message = "accuracy 0.5 is below 0.75 strict: false"
    assert steps["TooWeak"]["StepStatus"] == "Failed" and steps["TooWeak"]["FailureReason"] == message
    assert steps["TooWeak"]["Metadata"] == {"Fail": {"ErrorMessage": message}}
    assert "Deploy" not in steps


def test_property_file_missing_fails_condition_step_with_reason(sm):
    steps, params = condition_pipeline()
    create(sm, "CondMissing", steps, params)
    arn = sm.start_pipeline_execution(PipelineName="CondMissing", PipelineParameters=[
        {"Name": "RunTag", "Value": "absent"}])["PipelineExecutionArn"]
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Failed"
    step = steps_by_name(sm, arn)["CheckAccuracy"]
    assert step["StepStatus"] == "Failed" and "evaluation.json" in step["FailureReason"]


def test_failed_step_stops_running_siblings_and_fails_execution(sm, executor):
    executor.by_step["boom"] = FakeRun(result=JobResult(exit_code=1, failure_reason="AlgorithmError: boom"))
    executor.by_step["slow"] = FakeRun(keep_running=True)
    create(sm, "FailFast", [processing_step("Slow"), processing_step("Boom"),
                            processing_step("After", inputs_from="Boom")])
    arn = sm.start_pipeline_execution(PipelineName="FailFast")["PipelineExecutionArn"]
    d = wait_execution(sm, arn)
    assert d["PipelineExecutionStatus"] == "Failed"
    steps = steps_by_name(sm, arn)
    assert steps["Boom"]["StepStatus"] == "Failed"
    assert steps["Boom"]["FailureReason"] == "ClientError: AlgorithmError: boom"
    assert steps["Slow"]["StepStatus"] == "Stopped"
    slow_job = steps["Slow"]["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1]
    assert sm.describe_processing_job(ProcessingJobName=slow_job)["ProcessingJobStatus"] == "Stopped"
    assert "After" not in steps


def test_stop_pipeline_execution_stops_running_job(sm, executor):
    executor.by_step["forever"] = FakeRun(keep_running=True)
    create(sm, "StopPipe", [processing_step("Forever"), processing_step("Later", inputs_from="Forever")])
    arn = sm.start_pipeline_execution(PipelineName="StopPipe")["PipelineExecutionArn"]
    step = wait_step(sm, arn, "Forever", "Executing")
    token = str(uuid.uuid4())
    sm.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken=token)
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Stopped"
    assert sm.stop_pipeline_execution(PipelineExecutionArn=arn, ClientRequestToken=token)[
        "PipelineExecutionArn"] == arn  # the same request again answers as the first time
    job = step["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1]
    assert sm.describe_processing_job(ProcessingJobName=job)["ProcessingJobStatus"] == "Stopped"
    assert steps_by_name(sm, arn)["Forever"]["StepStatus"] == "Stopped"
    with pytest.raises(ClientError) as err:
        sm.stop_pipeline_execution(PipelineExecutionArn=arn)
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_depends_on_trigger_failed_runs_the_handler_and_execution_completes_with_failures(sm, executor):
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    executor.by_step["crash"] = FakeRun(result=JobResult(exit_code=1, failure_reason="AlgorithmError: crash"))
    create(sm, "RunConditions", [
        processing_step("Crash"),
        processing_step("Notify", DependsOn=[{"Step": "Crash", "Trigger": "Failed"}]),
        processing_step("Always", DependsOn=[{"Step": "Crash", "Trigger": "Any"}]),
        processing_step("OnStop", DependsOn=[{"Step": "Crash", "Trigger": "Stopped"}]),
        processing_step("Next", inputs_from="Crash")])
    arn = sm.start_pipeline_execution(PipelineName="RunConditions")["PipelineExecutionArn"]
    d = wait_execution(sm, arn)
    assert d["PipelineExecutionStatus"] == "CompletedWithFailures"
    assert d["PipelineExecutionStatus"] in model.shape_for("PipelineExecutionStatus").enum
    steps = steps_by_name(sm, arn)
    assert {n: s["StepStatus"] for n, s in steps.items()} == {"Crash": "Failed", "Notify": "Succeeded",
                                                             "Always": "Succeeded"}
    assert all(s["StepStatus"] in model.shape_for("StepStatus").enum for s in steps.values())
    listed = sm.list_pipeline_executions(PipelineName="RunConditions")["PipelineExecutionSummaries"]
    assert listed[0]["PipelineExecutionStatus"] == "CompletedWithFailures"


def test_depends_on_trigger_failed_upstream_succeeds_handler_is_skipped(sm):
    create(sm, "RunConditionsOk", [
        processing_step("Fine"), processing_step("Notify", DependsOn=[{"Step": "Fine", "Trigger": "Failed"}])])
    arn = sm.start_pipeline_execution(PipelineName="RunConditionsOk")["PipelineExecutionArn"]
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    assert set(steps_by_name(sm, arn)) == {"Fine"}


def test_create_pipeline_depends_on_unknown_trigger_is_validation_exception_saying_where(sm):
    with pytest.raises(ClientError) as err:
        create(sm, "BadTrigger", [processing_step("A"),
                                  processing_step("B", DependsOn=[{"Step": "A", "Trigger": "Sometimes"}])])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "Steps[1].DependsOn[0]" in err.value.response["Error"]["Message"]


def callback_step(name: str = "Approve") -> dict:
    return {"Name": name, "Type": "Callback", "SqsQueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q",
            "OutputParameters": [{"OutputName": "approved_by", "OutputType": "String"}],
            "Arguments": {"model": {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}}}


def test_callback_step_waits_for_send_step_success_and_outputs_feed_next_step(sm):
    after = processing_step("Ship")
    after["Arguments"]["Environment"] = {"APPROVER": {"Get": "Steps.Approve.OutputParameters['approved_by']"}}
    create(sm, "CallbackPipe", [processing_step("Prep"), callback_step(), after])
    arn = sm.start_pipeline_execution(PipelineName="CallbackPipe")["PipelineExecutionArn"]
    step = wait_step(sm, arn, "Approve", "Executing")
    token = step["Metadata"]["Callback"]["CallbackToken"]
    assert len(token) == 10 and step["Metadata"]["Callback"]["SqsQueueUrl"].endswith("/q")
    out = sm.send_pipeline_execution_step_success(CallbackToken=token, OutputParameters=[
        {"Name": "approved_by", "Value": "alice"}])
    assert out["PipelineExecutionArn"] == arn
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    steps = steps_by_name(sm, arn)
    assert steps["Approve"]["Metadata"]["Callback"]["OutputParameters"] == [{"Name": "approved_by", "Value": "alice"}]
    ship = steps["Ship"]["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1]
    assert sm.describe_processing_job(ProcessingJobName=ship)["Environment"] == {"APPROVER": "alice"}


def test_callback_step_failure_fails_execution_with_reason(sm):
    create(sm, "CallbackFail", [processing_step("Prep"), callback_step()])
    arn = sm.start_pipeline_execution(PipelineName="CallbackFail")["PipelineExecutionArn"]
    token = wait_step(sm, arn, "Approve", "Executing")["Metadata"]["Callback"]["CallbackToken"]
    sm.send_pipeline_execution_step_failure(CallbackToken=token, FailureReason="rejected by reviewer")
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Failed"
    assert steps_by_name(sm, arn)["Approve"]["FailureReason"] == "rejected by reviewer"
    with pytest.raises(ClientError) as err:
        sm.send_pipeline_execution_step_success(CallbackToken="zzzzzzzzzz")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"


def receive_callback(server, queue: str = QUEUE, timeout: int = 20) -> tuple[dict, str]:
    """What an SQS consumer does: one message from the queue (long polling), deleted once read."""
    sqs = server.client("sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages")
        if got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
            return json.loads(got[0]["Body"]), got[0]["MessageId"]
    raise AssertionError(f"no message on {queue}")


def test_callback_step_sends_token_and_arguments_to_its_sqs_queue(sm, server):
    server.client("sqs").create_queue(QueueName="approvals")
    step = callback_step()
    step["SqsQueueUrl"] = "https://sqs.us-east-1.amazonaws.com/123456789012/approvals"  # named by its last segment
    create(sm, "CallbackSqs", [processing_step("Prep"), step])
    arn = sm.start_pipeline_execution(PipelineName="CallbackSqs")["PipelineExecutionArn"]
    body, _ = receive_callback(server, "approvals")
    assert body["pipelineExecutionArn"] == arn
    assert body["arguments"]["model"].startswith(f"s3://{BUCKET}/runs/")
    assert body["token"] == steps_by_name(sm, arn)["Approve"]["Metadata"]["Callback"]["CallbackToken"]
    sm.send_pipeline_execution_step_success(CallbackToken=body["token"], OutputParameters=[
        {"Name": "approved_by", "Value": "bob"}])
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"


def test_callback_step_missing_queue_fails_with_reason(sm):
    step = callback_step()
    step["SqsQueueUrl"] = "https://sqs.us-east-1.amazonaws.com/1/no-such-queue"
    step["Arguments"] = {}
    create(sm, "CallbackNoQueue", [step])
    arn = sm.start_pipeline_execution(PipelineName="CallbackNoQueue")["PipelineExecutionArn"]
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Failed"
    why = steps_by_name(sm, arn)["Approve"]["FailureReason"]
    assert "no-such-queue" in why and "does not exist" in why


def test_stop_pipeline_execution_waiting_callback_tells_consumer_and_stops_after_its_answer(sm, server):
    server.client("sqs").create_queue(QueueName="stops")
    step = callback_step()
    step["SqsQueueUrl"] = "https://sqs.us-east-1.amazonaws.com/1/stops"
    step["Arguments"] = {"why": "review"}
    create(sm, "CallbackStop", [step, processing_step("After", DependsOn=["Approve"])])
    arn = sm.start_pipeline_execution(PipelineName="CallbackStop")["PipelineExecutionArn"]
    first, _ = receive_callback(server, "stops")
    assert "Status" not in first
    sm.stop_pipeline_execution(PipelineExecutionArn=arn)
    stopping, _ = receive_callback(server, "stops")
    assert stopping["Status"] == "Stopping" and stopping["token"] == first["token"]
    assert stopping["arguments"] == {"why": "review"}
    # SageMaker waits for the consumer's answer before the execution is Stopped
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == "Stopping"
    assert steps_by_name(sm, arn)["Approve"]["StepStatus"] == "Stopping"
    sm.send_pipeline_execution_step_failure(CallbackToken=first["token"], FailureReason="cleaned up")
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Stopped"
    steps = steps_by_name(sm, arn)
    assert steps["Approve"]["StepStatus"] == "Failed" and "After" not in steps


def test_lambda_step_fails_with_clear_reason(sm):
    create(sm, "LambdaPipe", [{"Name": "Fn", "Type": "Lambda", "FunctionArn": "arn:aws:lambda:us-east-1:1:function:f",
                               "Arguments": {}}])
    arn = sm.start_pipeline_execution(PipelineName="LambdaPipe")["PipelineExecutionArn"]
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Failed"
    assert "AWS Lambda" in steps_by_name(sm, arn)["Fn"]["FailureReason"]


def test_cache_config_second_execution_reuses_step_with_cache_hit_result(sm, executor):
    cached = processing_step("Prep", CacheConfig={"Enabled": True, "ExpireAfter": "P30D"})
    create(sm, "CachePipe", [cached])
    first = sm.start_pipeline_execution(PipelineName="CachePipe")["PipelineExecutionArn"]
    assert wait_execution(sm, first)["PipelineExecutionStatus"] == "Succeeded"
    submitted = len(executor.submitted)
    second = sm.start_pipeline_execution(PipelineName="CachePipe")["PipelineExecutionArn"]
    assert wait_execution(sm, second)["PipelineExecutionStatus"] == "Succeeded"
    assert len(executor.submitted) == submitted  # no new job
    a, b = steps_by_name(sm, first)["Prep"], steps_by_name(sm, second)["Prep"]
    assert b["CacheHitResult"] == {"SourcePipelineExecutionArn": first}
    assert b["Metadata"] == a["Metadata"]
    assert "CacheHitResult" not in a


def test_retry_policy_reruns_internal_error_then_succeeds(sm, executor):
    executor.by_step["flaky"] = FakeRun(result=JobResult(exit_code=None, failure_reason=(
        "InternalServerError: the job's process ended without reporting a result")))
    step = processing_step("Flaky", RetryPolicies=[{"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"],
                                                    "IntervalSeconds": 1, "BackoffRate": 1.0, "MaxAttempts": 2}])
    create(sm, "RetryPipe", [step])
    arn = sm.start_pipeline_execution(PipelineName="RetryPipe")["PipelineExecutionArn"]
    deadline = time.time() + 30
    while not any("-flaky-" in name for name in executor.handles) and time.time() < deadline:
        time.sleep(0.05)
    executor.by_step.pop("flaky")  # the first attempt was submitted (and failed): the second succeeds
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    assert steps_by_name(sm, arn)["Flaky"]["AttemptCount"] == 2


def test_retry_pipeline_execution_reruns_only_failed_steps(sm, executor):
    executor.by_step["shaky"] = FakeRun(result=JobResult(exit_code=1, failure_reason="AlgorithmError: no"))
    create(sm, "RetryExec", [processing_step("Steady"), processing_step("Shaky", inputs_from="Steady")])
    arn = sm.start_pipeline_execution(PipelineName="RetryExec")["PipelineExecutionArn"]
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Failed"
    steady = steps_by_name(sm, arn)["Steady"]
    executor.by_step.pop("shaky")
    sm.retry_pipeline_execution(PipelineExecutionArn=arn)
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    steps = steps_by_name(sm, arn)
    assert steps["Steady"] == steady  # not run again
    assert steps["Shaky"]["StepStatus"] == "Succeeded"


def test_selective_execution_runs_selected_steps_reusing_the_source(sm):
    create(sm, "SelectPipe", [processing_step("Prep"), processing_step("Next", inputs_from="Prep")])
    first = sm.start_pipeline_execution(PipelineName="SelectPipe")["PipelineExecutionArn"]
    assert wait_execution(sm, first)["PipelineExecutionStatus"] == "Succeeded"
    second = sm.start_pipeline_execution(PipelineName="SelectPipe", SelectiveExecutionConfig={
        "SourcePipelineExecutionArn": first, "SelectedSteps": [{"StepName": "Next"}]})["PipelineExecutionArn"]
    assert wait_execution(sm, second)["PipelineExecutionStatus"] == "Succeeded"
    a, b = steps_by_name(sm, first), steps_by_name(sm, second)
    assert b["Prep"]["SelectiveExecutionResult"] == {"SourcePipelineExecutionArn": first}
    assert b["Prep"]["Metadata"] == a["Prep"]["Metadata"]
    assert b["Next"]["Metadata"] != a["Next"]["Metadata"]
    job = b["Next"]["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1]
    source = sm.describe_processing_job(ProcessingJobName=job)["ProcessingInputs"][1]["S3Input"]["S3Uri"]
    assert source == f"s3://{BUCKET}/runs/{first.rsplit('/', 1)[1]}/Prep"


def test_parallelism_configuration_limits_running_steps(sm, executor):
    for step in ("para", "parb", "parc"):
        executor.by_step[step] = FakeRun(keep_running=True)
    create(sm, "ParPipe", [processing_step("ParA"), processing_step("ParB"), processing_step("ParC")],
           ParallelismConfiguration={"MaxParallelExecutionSteps": 2})
    arn = sm.start_pipeline_execution(PipelineName="ParPipe")["PipelineExecutionArn"]
    deadline = time.time() + 10
    while len(steps_by_name(sm, arn)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert len(steps_by_name(sm, arn)) == 2
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)["ParallelismConfiguration"] == {
        "MaxParallelExecutionSteps": 2}
    sm.stop_pipeline_execution(PipelineExecutionArn=arn)
    assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Stopped"


def training_step(name: str = "Train") -> dict:
    return {"Name": name, "Type": "Training", "Arguments": {
        "AlgorithmSpecification": {"TrainingImage": XGB_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "HyperParameters": {"num_round": {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Rounds"}]}},
                            "objective": "binary:logistic"},
        "InputDataConfig": [{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"},
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": {"Get": "Parameters.Instances"},
                           "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600}}}


def test_training_model_and_register_model_steps_chain_properties(sm, server):
    server.store().put_bytes(BUCKET, "runs/seed.csv", b"1,2\n")  # the training channel lists its input
    prep = processing_step("Prep")
    prep["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = f"s3://{BUCKET}/runs"
    container = {"Image": XGB_IMAGE, "ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}
    model = {"Name": "Deploy-CreateModel", "Type": "Model", "Arguments": {
        "ExecutionRoleArn": ROLE, "PrimaryContainer": container}}
    register = {"Name": "Deploy-RegisterModel", "Type": "RegisterModel", "Arguments": {
        "ModelPackageGroupName": "pipeline-models", "ModelApprovalStatus": "PendingManualApproval",
        "SkipModelValidation": "None",
        "InferenceSpecification": {"Containers": [container], "SupportedContentTypes": ["text/csv"],
                                   "SupportedResponseMIMETypes": ["text/csv"]}}}
    create(sm, "TrainPipe", [prep, training_step(), model, register],
           [{"Name": "Rounds", "Type": "Integer", "DefaultValue": 5},
            {"Name": "Instances", "Type": "Integer", "DefaultValue": 1}])
    arn = sm.start_pipeline_execution(PipelineName="TrainPipe", PipelineParameters=[
        {"Name": "Rounds", "Value": "7"}])["PipelineExecutionArn"]
    d = wait_execution(sm, arn)
    steps = steps_by_name(sm, arn)
    assert d["PipelineExecutionStatus"] == "Succeeded", steps
    job = sm.describe_training_job(TrainingJobName=steps["Train"]["Metadata"]["TrainingJob"]["Arn"].split("/")[-1])
    assert job["HyperParameters"]["num_round"] == "7" and job["ResourceConfig"]["InstanceCount"] == 1
    model_arn = steps["Deploy-CreateModel"]["Metadata"]["Model"]["Arn"]
    described = sm.describe_model(ModelName=model_arn.split("/")[-1])
    assert described["PrimaryContainer"]["ModelDataUrl"] == job["ModelArtifacts"]["S3ModelArtifacts"]
    package_arn = steps["Deploy-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]
    assert package_arn.endswith("model-package/pipeline-models/1")
    package = sm.describe_model_package(ModelPackageName=package_arn)
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == (
        job["ModelArtifacts"]["S3ModelArtifacts"])


def test_control_plane_restart_mid_execution_continues_without_rerunning_steps(tmp_path):
    first = StepExecutor()
    gen = start_server(tmp_path, executor=first)
    srv = next(gen)
    srv.store().ensure_bucket(BUCKET)
    srv.store().put_bytes(BUCKET, "raw/data.csv", b"1,2\n")
    srv.store().put_bytes(BUCKET, "code/prep.py", b"print('hi')\n")
    srv.client("sqs").create_queue(QueueName=QUEUE)
    sm = srv.client("sagemaker")
    create(sm, "Durable", [processing_step("Prep"), callback_step(), processing_step("Ship", inputs_from="Prep")])
    arn = sm.start_pipeline_execution(PipelineName="Durable")["PipelineExecutionArn"]
    wait_step(sm, arn, "Ship", "Succeeded")
    token = wait_step(sm, arn, "Approve", "Executing")["Metadata"]["Callback"]["CallbackToken"]
    before = steps_by_name(sm, arn)
    gen.close()  # the control plane goes away mid-execution

    second = StepExecutor()
    gen = start_server(tmp_path, executor=second)
    srv = next(gen)
    try:
        sm = srv.client("sagemaker")
        assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == "Executing"
        sm.send_pipeline_execution_step_success(CallbackToken=token)
        assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
        after = steps_by_name(sm, arn)
        assert after["Prep"] == before["Prep"] and after["Ship"] == before["Ship"]
        assert second.submitted == []  # nothing ran again
    finally:
        gen.close()


def test_tuning_step_runs_a_tuning_job_and_exposes_best_training_job(tmp_path):
    from tests.api import tuning_support as ts

    gen = start_server(tmp_path, executor=ts.TuningExecutor())
    srv = next(gen)
    try:
        srv.store().ensure_bucket(ts.BUCKET)
        srv.store().put_bytes(ts.BUCKET, "data/train/part-0.csv", b"1,0.5\n")
        sm = srv.client("sagemaker")
        args = ts.tuning_request("unused", max_jobs=2, parallel=2)
        del args["HyperParameterTuningJobName"]
        best = {"Std:Join": {"On": "/", "Values": [
            "s3:/", ts.BUCKET, {"Get": "Steps.Tune.TrainingJobSummaries[0].TrainingJobName"}]}}
        model_data = {"Std:Join": {"On": "", "Values": [
            f"s3://{ts.BUCKET}/tuning-out/", {"Get": "Steps.Tune.BestTrainingJob.TrainingJobName"},
            "/output/model.tar.gz"]}}
        model = {"Name": "BestModel", "Type": "Model", "Arguments": {"ExecutionRoleArn": ROLE, "PrimaryContainer": {
            "Image": XGB_IMAGE, "ModelDataUrl": model_data, "Environment": {"BEST": best}}}}
        create(sm, "TunePipe", [{"Name": "Tune", "Type": "Tuning", "Arguments": args}, model])
        arn = sm.start_pipeline_execution(PipelineName="TunePipe")["PipelineExecutionArn"]
        d = wait_execution(sm, arn, timeout=120)
        steps = steps_by_name(sm, arn)
        assert d["PipelineExecutionStatus"] == "Succeeded", steps
        tuning_arn = steps["Tune"]["Metadata"]["TuningJob"]["Arn"]
        name = tuning_arn.split("/")[-1]
        assert len(name) <= 32 and name.startswith(arn.rsplit("/", 1)[1])
        tuned = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
        best_name = tuned["BestTrainingJob"]["TrainingJobName"]
        container = sm.describe_model(ModelName=steps["BestModel"]["Metadata"]["Model"]["Arn"].split("/")[-1])[
            "PrimaryContainer"]
        assert container["Environment"]["BEST"] == f"s3://{ts.BUCKET}/{best_name}"
        assert container["ModelDataUrl"] == f"s3://{ts.BUCKET}/tuning-out/{best_name}/output/model.tar.gz"
    finally:
        gen.close()


def test_graceful_restart_mid_step_starts_the_interrupted_step_again(tmp_path):
    first = StepExecutor()
    first.by_step["long"] = FakeRun(keep_running=True)
    gen = start_server(tmp_path, executor=first)
    srv = next(gen)
    srv.store().ensure_bucket(BUCKET)
    srv.store().put_bytes(BUCKET, "raw/data.csv", b"1,2\n")
    srv.store().put_bytes(BUCKET, "code/prep.py", b"print('hi')\n")
    sm = srv.client("sagemaker")
    create(sm, "Interrupted", [processing_step("Prep"), processing_step("Long", inputs_from="Prep")])
    arn = sm.start_pipeline_execution(PipelineName="Interrupted")["PipelineExecutionArn"]
    wait_step(sm, arn, "Long", "Executing")
    prep = steps_by_name(sm, arn)["Prep"]
    gen.close()  # `opensage up` stopping: running jobs end Failed "the OpenSage platform was shut down"

    second = StepExecutor()
    gen = start_server(tmp_path, executor=second)
    srv = next(gen)
    try:
        sm = srv.client("sagemaker")
        assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
        steps = steps_by_name(sm, arn)
        assert steps["Prep"] == prep
        assert steps["Long"]["AttemptCount"] == 2
        assert [p.name for p in second.submitted] == ["algo-1"] and "-long-" in str(second.submitted[0])
    finally:
        gen.close()


def test_crash_between_saving_a_step_and_creating_its_job_creates_it_once(sm, server):
    engine = server.platform.capabilities.services["pipeline-engine"]
    original = engine._create
    calls = []

    def crash_once(step, st, now):
        calls.append(st["_job"]["name"])
        if len(calls) == 1:
            raise RuntimeError("control plane died here")
        return original(step, st, now)

    engine._create = crash_once
    try:
        create(sm, "CrashPipe", [processing_step("Prep")])
        arn = sm.start_pipeline_execution(PipelineName="CrashPipe")["PipelineExecutionArn"]
        assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    finally:
        engine._create = original
    assert len(calls) == 2 and calls[0] == calls[1]  # the saved name is the one created
    job = steps_by_name(sm, arn)["Prep"]["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1]
    assert job == calls[0]
    jobs = sm.list_processing_jobs(NameContains=arn.rsplit("/", 1)[1])["ProcessingJobSummaries"]
    assert len(jobs) == 1


def test_pipeline_show_draws_the_execution_dag_with_statuses(sm, server):
    from opensage.cli.pipeline import draw_execution

    steps, params = condition_pipeline()
    create(sm, "ShowPipe", steps, params)
    server.store().put_bytes(BUCKET, "eval/show/evaluation.json",
                             json.dumps({"metrics": {"accuracy": {"value": 0.1}}}).encode())
    arn = sm.start_pipeline_execution(PipelineName="ShowPipe", PipelineParameters=[
        {"Name": "RunTag", "Value": "show"}])["PipelineExecutionArn"]
    wait_execution(sm, arn)
    picture, status = draw_execution(sm, arn, color=False)
    assert status == "Failed"
    lines = picture.splitlines()
    assert lines[0] == f"showpipe · {arn.rsplit('/', 1)[1]} · Failed"
    for box in ("✔ Prep", "✔ Eval", "✔ CheckAccuracy", "✘ TooWeak", "○ Deploy"):
        assert box in picture
    row = {n: next(i for i, line in enumerate(lines) if f" {n} " in line) for n in ("Prep", "Eval", "CheckAccuracy")}
    assert row["Prep"] < row["Eval"] < row["CheckAccuracy"]
    branches = next(line for line in lines if "TooWeak" in line)
    assert "Deploy" in branches  # both branches side by side under the condition
    assert "Fail · else CheckAccuracy" in picture and picture.count("▼") >= 4
    assert "TooWeak: accuracy 0.1 is below 0.8 strict: false" in picture


def test_model_then_transform_step_resolves_model_name_and_metadata(sm, server):
    server.store().put_bytes(BUCKET, "batch/in/rows.csv", b"1,2\n3,4\n")
    model = {"Name": "Scorer-CreateModel", "Type": "Model", "Arguments": {
        "ExecutionRoleArn": ROLE, "PrimaryContainer": {"Image": XGB_IMAGE,
                                                      "ModelDataUrl": f"s3://{BUCKET}/models/m.tar.gz"}}}
    transform = {"Name": "Score", "Type": "Transform", "Arguments": {
        "ModelName": {"Get": "Steps.Scorer-CreateModel.ModelName"},
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                           "S3Uri": f"s3://{BUCKET}/batch/in"}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": {"Std:Join": {"On": "/", "Values": [
            f"s3://{BUCKET}/batch/out", {"Get": "Execution.PipelineExecutionId"}]}}},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}}}
    create(sm, "BatchPipe", [model, transform])
    arn = sm.start_pipeline_execution(PipelineName="BatchPipe")["PipelineExecutionArn"]
    wait_execution(sm, arn)
    steps = steps_by_name(sm, arn)
    model_name = steps["Scorer-CreateModel"]["Metadata"]["Model"]["Arn"].split("/")[-1]
    assert model_name.startswith(f"pipelines-{arn.rsplit('/', 1)[1]}-scorercreatemodel-")
    job = steps["Score"]["Metadata"]["TransformJob"]["Arn"].split("/")[-1]
    described = sm.describe_transform_job(TransformJobName=job)
    assert described["ModelName"] == model_name
    assert described["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/batch/out/{arn.rsplit('/', 1)[1]}"
    assert steps["Score"]["StepStatus"] == {"Completed": "Succeeded", "Failed": "Failed"}[
        described["TransformJobStatus"]]


def test_list_pipeline_execution_steps_without_arn_is_validation_exception(sm):
    with pytest.raises(ClientError) as err:
        sm.list_pipeline_execution_steps()
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "pipelineExecutionArn" in err.value.response["Error"]["Message"]


def test_crash_after_creating_a_child_before_saving_adopts_it_instead_of_a_second_one(sm, server):
    engine = server.platform.capabilities.services["pipeline-engine"]
    original = engine._create
    crashed: set[str] = set()

    def create_then_crash(step, st, now):
        original(step, st, now)
        if step.name not in crashed:
            crashed.add(step.name)
            raise RuntimeError("control plane died before saving")

    container = {"Image": XGB_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/m.tar.gz"}
    steps = [processing_step("Prep"),
             {"Name": "M-CreateModel", "Type": "Model", "Arguments": {"ExecutionRoleArn": ROLE,
                                                                    "PrimaryContainer": container}},
             {"Name": "M-RegisterModel", "Type": "RegisterModel", "Arguments": {
                 "ModelPackageGroupName": "crash-group", "ModelApprovalStatus": "Approved",
                 "InferenceSpecification": {"Containers": [container], "SupportedContentTypes": ["text/csv"],
                                            "SupportedResponseMIMETypes": ["text/csv"]}}}]
    engine._create = create_then_crash
    try:
        create(sm, "AdoptPipe", steps)
        arn = sm.start_pipeline_execution(PipelineName="AdoptPipe")["PipelineExecutionArn"]
        assert wait_execution(sm, arn)["PipelineExecutionStatus"] == "Succeeded"
    finally:
        engine._create = original
    assert crashed == {"Prep", "M-CreateModel", "M-RegisterModel"}
    exec_id = arn.rsplit("/", 1)[1]
    assert len(sm.list_processing_jobs(NameContains=exec_id)["ProcessingJobSummaries"]) == 1
    assert len(sm.list_models(NameContains=exec_id)["Models"]) == 1
    packages = sm.list_model_packages(ModelPackageGroupName="crash-group")["ModelPackageSummaryList"]
    assert len(packages) == 1
    done = steps_by_name(sm, arn)
    assert done["M-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"] == packages[0]["ModelPackageArn"]
