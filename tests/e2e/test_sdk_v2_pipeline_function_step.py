"""SDK v2 ``@step`` function steps against `opensage up`: the SDK pickles each function to S3 and emits a
Training step whose container runs ``job_driver.sh`` -> ``python -m sagemaker.remote_function.invoke_function``;
a consumer step gets the producer's return value (JsonGet on its results.json) and ``execution.result()`` reads
the last one back."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# A framework image whose jobs run on the platform's own interpreter (which has the sagemaker SDK and
# cloudpickle the remote-function runner imports).
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.14.1-cpu-py310-ubuntu20.04-sagemaker"


# The SDK's bootstrap runs `sudo chmod -R 777 ...` as a non-root user: jobs have a `sudo` that runs the command
# as their own user (runner/sandbox.py JOB_BIN).
def test_function_steps_pass_return_values_and_result_reads_the_last(platform):
    from sagemaker.workflow.function_step import step
    from sagemaker.workflow.parameters import ParameterInteger
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.pipeline_context import PipelineSession

    rows = ParameterInteger(name="Rows", default_value=20)

    @step(name="Summarize", image_uri=IMAGE, instance_type="ml.m5.large", role=ROLE)
    def summarize(n: int) -> dict:
        values = [i * i for i in range(n)]
        return {"n": n, "mean": sum(values) / n}

    @step(name="Report", image_uri=IMAGE, instance_type="ml.m5.large", role=ROLE)
    def report(stats: dict) -> str:
        return f"{stats['n']} rows, mean {stats['mean']:.1f}"

    pipeline = Pipeline(name="FunctionSteps", parameters=[rows], steps=[report(summarize(rows))],
                        sagemaker_session=PipelineSession())
    pipeline.upsert(role_arn=ROLE)
    execution = pipeline.start(parameters={"Rows": 10})
    execution.wait(delay=2, max_attempts=150)
    steps = {s["StepName"]: s for s in execution.list_steps()}
    assert {n: s["StepStatus"] for n, s in steps.items()} == {"Summarize": "Succeeded", "Report": "Succeeded"}
    assert execution.result(step_name="Report") == "10 rows, mean 28.5"
