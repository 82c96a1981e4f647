"""SDK v3 Pipelines (sagemaker.mlops.workflow, in .venv-sdk3) against `opensage up`: Pipeline.upsert / start /
wait / list_steps with a CallbackStep answered from SQS, a ConditionStep on its outputs, and a step that runs on
a failed upstream step (StepDependency TriggerCondition.FAILED) so the execution ends CompletedWithFailures."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SDK3_PYTHON = Path(__file__).resolve().parents[2] / ".venv-sdk3" / "bin" / "python"

SCRIPT = textwrap.dedent('''
    import json, sys, time
    import boto3
    from sagemaker.core.workflow.conditions import ConditionEquals
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.parameters import ParameterString
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackStep
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.step_dependency import StepDependency, TriggerCondition

    role, name = sys.argv[1], sys.argv[2]
    sqs, sm = boto3.client("sqs"), boto3.client("sagemaker")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]

    def answer(outputs):
        """One consumer turn: the next message, answered with these outputs (or a failure)."""
        deadline = time.time() + 60
        while time.time() < deadline:
            got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages")
            if got:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
                body = json.loads(got[0]["Body"])
                sm.send_pipeline_execution_step_success(
                    CallbackToken=body["token"], OutputParameters=[{"Name": k, "Value": v} for k, v in outputs.items()])
                return body
        raise SystemExit("no callback message")

    expected = ParameterString(name="Expected", default_value="approved")
    review = CallbackStep(name="Review", sqs_queue_url=url, inputs={"stage": "review"},
                          outputs=[CallbackOutput(output_name="verdict")])
    verdict = review.properties.Outputs["verdict"]
    reject = FailStep(name="Reject", error_message=Join(on=": ", values=["rejected", verdict]))
    gate = ConditionStep(name="Gate", conditions=[ConditionEquals(left=verdict, right=expected)], else_steps=[reject])
    notify = CallbackStep(name="NotifyOnReject", sqs_queue_url=url, inputs={"stage": "notify"},
                          outputs=[CallbackOutput(output_name="ack")],
                          depends_on=[StepDependency(reject, TriggerCondition.FAILED)])
    pipeline = Pipeline(name=name, parameters=[expected], steps=[review, gate, notify])
    pipeline.upsert(role_arn=role)

    first = pipeline.start()
    print("ARGS", answer({"verdict": "approved"})["arguments"]["stage"])
    first.wait(delay=1, max_attempts=60)
    print("FIRST", first.describe()["PipelineExecutionStatus"],
          sorted((s["StepName"], s["StepStatus"]) for s in first.list_steps()))

    second = pipeline.start(parameters={"Expected": "gold"})
    answer({"verdict": "silver"})
    print("NOTIFY", answer({"ack": "sent"})["arguments"]["stage"])
    for _ in range(60):
        status = second.describe()["PipelineExecutionStatus"]
        if status not in ("Executing", "Stopping"):
            break
        time.sleep(1)
    steps = {s["StepName"]: s for s in second.list_steps()}
    print("SECOND", status, sorted((n, s["StepStatus"]) for n, s in steps.items()))
    print("REASON", steps["Reject"]["FailureReason"])
''')


def test_sdk_v3_pipeline_callback_condition_and_run_condition_on_failure(platform, tmp_path):
    assert SDK3_PYTHON.exists(), "SDK v3 venv missing: run `make install` (it builds .venv-sdk3)"
    script = tmp_path / "v3_pipeline.py"
    script.write_text(SCRIPT)
    env = {**os.environ, **platform.env}
    done = subprocess.run([str(SDK3_PYTHON), str(script), ROLE, "sdk3-callback-pipeline"], env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    out = done.stdout
    assert "ARGS review" in out
    assert "FIRST Succeeded [('Gate', 'Succeeded'), ('Review', 'Succeeded')]" in out
    assert "NOTIFY notify" in out
    assert ("SECOND CompletedWithFailures [('Gate', 'Succeeded'), ('NotifyOnReject', 'Succeeded'), "
            "('Reject', 'Failed'), ('Review', 'Succeeded')]") in out
    assert "REASON rejected: silver" in out
