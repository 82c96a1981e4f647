"""SDK v2 CallbackStep against `opensage up`, as AWS's callback-step example uses it: the pipeline sends a token
to an SQS queue, a consumer (plain boto3) receives it, does its work and answers with
SendPipelineExecutionStepSuccess / Failure; a ConditionStep reads the callback's outputs."""

from __future__ import annotations

import json
import time

import boto3
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def _pipeline(name: str, queue_url: str):
    from sagemaker.workflow.callback_step import CallbackOutput, CallbackOutputTypeEnum, CallbackStep
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join
    from sagemaker.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.pipeline_context import PipelineSession

    reviewer = ParameterString(name="Reviewer", default_value="alice")
    threshold = ParameterFloat(name="MinScore", default_value=0.8)
    review = CallbackStep(name="Review", sqs_queue_url=queue_url,
                          inputs={"reviewer": reviewer, "model": "s3://models/diabetes/model.tar.gz"},
                          outputs=[CallbackOutput(output_name="verdict", output_type=CallbackOutputTypeEnum.String),
                                   CallbackOutput(output_name="score", output_type=CallbackOutputTypeEnum.Float)])
    verdict, score = review.properties.Outputs["verdict"], review.properties.Outputs["score"]
    reject = FailStep(name="Rejected", error_message=Join(on=" ", values=["review verdict", verdict, "score", score]))
    gate = ConditionStep(name="ScoreGate", conditions=[ConditionGreaterThanOrEqualTo(left=score, right=threshold)],
                         if_steps=[], else_steps=[reject])
    return Pipeline(name=name, parameters=[reviewer, threshold], steps=[review, gate],
                    sagemaker_session=PipelineSession())


def _consume(queue_url: str, timeout: float = 60.0) -> dict:
    """The consumer side: long-poll the queue, delete the message, return its JSON body."""
    sqs = boto3.client("sqs")
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5, MaxNumberOfMessages=1).get("Messages")
        if got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=got[0]["ReceiptHandle"])
            return json.loads(got[0]["Body"])
    raise AssertionError(f"no callback message on {queue_url} in {timeout}s")


def test_callback_step_consumer_answers_from_sqs_and_pipeline_succeeds(platform):
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="model-review")["QueueUrl"]
    pipeline = _pipeline("CallbackReview", queue_url)
    pipeline.upsert(role_arn=ROLE)
    execution = pipeline.start(parameters={"Reviewer": "bob"})

    message = _consume(queue_url)
    assert message["pipelineExecutionArn"] == execution.arn
    assert message["arguments"] == {"reviewer": "bob", "model": "s3://models/diabetes/model.tar.gz"}
    sm = boto3.client("sagemaker")
    sm.send_pipeline_execution_step_success(CallbackToken=message["token"], OutputParameters=[
        {"Name": "verdict", "Value": "approved"}, {"Name": "score", "Value": "0.93"}])
    execution.wait(delay=1, max_attempts=60)

    steps = {s["StepName"]: s for s in execution.list_steps()}
    assert steps["Review"]["StepStatus"] == "Succeeded"
    assert steps["Review"]["Metadata"]["Callback"]["CallbackToken"] == message["token"]
    assert {p["Name"]: p["Value"] for p in steps["Review"]["Metadata"]["Callback"]["OutputParameters"]} == {
        "verdict": "approved", "score": "0.93"}
    assert steps["ScoreGate"]["Metadata"]["Condition"]["Outcome"] == "True"
    assert "Rejected" not in steps


def test_callback_step_low_score_fails_with_join_message(platform):
    from botocore.exceptions import WaiterError

    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="model-review-low")["QueueUrl"]
    pipeline = _pipeline("CallbackReviewLow", queue_url)
    pipeline.upsert(role_arn=ROLE)
    execution = pipeline.start()
    message = _consume(queue_url)
    assert message["arguments"]["reviewer"] == "alice"
    boto3.client("sagemaker").send_pipeline_execution_step_success(CallbackToken=message["token"], OutputParameters=[
        {"Name": "verdict", "Value": "needs-work"}, {"Name": "score", "Value": "0.4"}])
    with pytest.raises(WaiterError):
        execution.wait(delay=1, max_attempts=60)
    assert execution.describe()["PipelineExecutionStatus"] == "Failed"
    steps = {s["StepName"]: s for s in execution.list_steps()}
    assert steps["Rejected"]["FailureReason"] == "review verdict needs-work score 0.4"
