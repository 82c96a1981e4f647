"""SageMaker Python SDK v2 Pipelines, unmodified, against `opensage up`: AWS's abalone pipeline example
(preprocess -> train built-in XGBoost -> evaluate with a PropertyFile -> condition on JsonGet -> register +
create the model, or fail with a Join message), with sklearn's bundled diabetes data instead of abalone."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PREPROCESS = textwrap.dedent("""\
    import os
    import numpy as np
    import pandas as pd

    df = pd.read_csv("/opt/ml/processing/input/diabetes.csv")
    y = df.pop("target")
    data = pd.concat([y, df], axis=1).sample(frac=1.0, random_state=0).to_numpy()
    train, validation, test = np.split(data, [int(0.7 * len(data)), int(0.85 * len(data))])
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        os.makedirs(f"/opt/ml/processing/{name}", exist_ok=True)
        pd.DataFrame(part).to_csv(f"/opt/ml/processing/{name}/{name}.csv", header=False, index=False)
    print("rows", len(train), len(validation), len(test), flush=True)
""")

EVALUATE = textwrap.dedent("""\
    import json, os, pathlib, tarfile
    import numpy as np
    import pandas as pd
    import xgboost

    with tarfile.open("/opt/ml/processing/model/model.tar.gz") as tar:
        tar.extractall(path=".")
    booster = xgboost.Booster()
    booster.load_model("xgboost-model")
    df = pd.read_csv("/opt/ml/processing/test/test.csv", header=None)
    y = df.iloc[:, 0].to_numpy()
    predictions = booster.predict(xgboost.DMatrix(df.iloc[:, 1:].values))
    mse = float(np.mean((y - predictions) ** 2))
    report = {"regression_metrics": {"mse": {"value": mse, "standard_deviation": float(np.std(y - predictions))}}}
    pathlib.Path("/opt/ml/processing/evaluation").mkdir(parents=True, exist_ok=True)
    with open("/opt/ml/processing/evaluation/evaluation.json", "w") as f:
        f.write(json.dumps(report))
    print("mse", mse, flush=True)
""")


def _diabetes_csv(tmp_path: Path) -> Path:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True).frame
    path = tmp_path / "diabetes.csv"
    frame.to_csv(path, index=False)
    return path


def _pipeline(sm_session, tmp_path: Path, name: str):
    from sagemaker import image_uris
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.model import Model
    from sagemaker.processing import ProcessingInput, ProcessingOutput, ScriptProcessor
    from sagemaker.sklearn.processing import SKLearnProcessor
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionLessThanOrEqualTo
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.parameters import ParameterFloat, ParameterInteger, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.pipeline_context import PipelineSession
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import CacheConfig, ProcessingStep, TrainingStep

    session = PipelineSession()
    bucket = session.default_bucket()
    raw = sm_session.upload_data(str(_diabetes_csv(tmp_path)), bucket=bucket, key_prefix=f"{name}/raw")
    (tmp_path / "preprocessing.py").write_text(PREPROCESS)
    (tmp_path / "evaluate.py").write_text(EVALUATE)

    processing_instance_count = ParameterInteger(name="ProcessingInstanceCount", default_value=1)
    input_data = ParameterString(name="InputData", default_value=raw)
    approval = ParameterString(name="ModelApprovalStatus", default_value="PendingManualApproval")
    mse_threshold = ParameterFloat(name="MseThreshold", default_value=100000.0)
    cache = CacheConfig(enable_caching=True, expire_after="p30d")

    processor = SKLearnProcessor(framework_version="1.2-1", instance_type="ml.m5.xlarge",
                                 instance_count=processing_instance_count, role=ROLE,
                                 base_job_name="sklearn-diabetes-process", sagemaker_session=session)
    step_process = ProcessingStep(name="DiabetesProcess", cache_config=cache, step_args=processor.run(
        inputs=[ProcessingInput(source=input_data, destination="/opt/ml/processing/input")],
        outputs=[ProcessingOutput(output_name=n, source=f"/opt/ml/processing/{n}")
                 for n in ("train", "validation", "test")],
        code=str(tmp_path / "preprocessing.py")))

    image = image_uris.retrieve(framework="xgboost", region=session.boto_region_name, version="1.7-1",
                                py_version="py3", instance_type="ml.m5.xlarge")
    xgb = Estimator(image_uri=image, instance_type="ml.m5.xlarge", instance_count=1,
                    output_path=f"s3://{bucket}/{name}/model", role=ROLE, sagemaker_session=session)
    xgb.set_hyperparameters(objective="reg:squarederror", num_round=30, max_depth=4, eta=0.2)
    outputs = step_process.properties.ProcessingOutputConfig.Outputs
    step_train = TrainingStep(name="DiabetesTrain", step_args=xgb.fit(inputs={
        "train": TrainingInput(s3_data=outputs["train"].S3Output.S3Uri, content_type="text/csv"),
        "validation": TrainingInput(s3_data=outputs["validation"].S3Output.S3Uri, content_type="text/csv")}))

    evaluator = ScriptProcessor(image_uri=image, command=["python3"], instance_type="ml.m5.xlarge",
                                instance_count=1, base_job_name="script-diabetes-eval", role=ROLE,
                                sagemaker_session=session)
    report = PropertyFile(name="EvaluationReport", output_name="evaluation", path="evaluation.json")
    step_eval = ProcessingStep(name="DiabetesEval", property_files=[report], step_args=evaluator.run(
        inputs=[ProcessingInput(source=step_train.properties.ModelArtifacts.S3ModelArtifacts,
                                destination="/opt/ml/processing/model"),
                ProcessingInput(source=outputs["test"].S3Output.S3Uri, destination="/opt/ml/processing/test")],
        outputs=[ProcessingOutput(output_name="evaluation", source="/opt/ml/processing/evaluation")],
        code=str(tmp_path / "evaluate.py")))

    model = Model(image_uri=image, model_data=step_train.properties.ModelArtifacts.S3ModelArtifacts,
                  sagemaker_session=session, role=ROLE)
    step_register = ModelStep(name="RegisterDiabetesModel", step_args=model.register(
        content_types=["text/csv"], response_types=["text/csv"], inference_instances=["ml.t2.medium", "ml.m5.xlarge"],
        transform_instances=["ml.m5.xlarge"], model_package_group_name=f"{name}-group", approval_status=approval))
    step_create = ModelStep(name="CreateDiabetesModel", step_args=model.create(instance_type="ml.m5.large"))
    step_fail = FailStep(name="DiabetesMSEFail",
                         error_message=Join(on=" ", values=["Execution failed due to MSE >", mse_threshold]))
    step_cond = ConditionStep(
        name="DiabetesMSECond",
        conditions=[ConditionLessThanOrEqualTo(
            left=JsonGet(step_name=step_eval.name, property_file=report, json_path="regression_metrics.mse.value"),
            right=mse_threshold)],
        if_steps=[step_register, step_create], else_steps=[step_fail])
    return Pipeline(name=name, parameters=[processing_instance_count, input_data, approval, mse_threshold],
                    steps=[step_process, step_train, step_eval, step_cond], sagemaker_session=session)


def test_pipeline_upsert_start_wait_list_steps_registers_model_then_fail_branch_with_cache(platform, sm_session,
                                                                                          tmp_path):
    import subprocess
    import sys

    from botocore.exceptions import WaiterError

    pipeline = _pipeline(sm_session, tmp_path, "diabetes-pipeline")
    arn = pipeline.upsert(role_arn=ROLE)["PipelineArn"]
    tags = [{"Key": "project", "Value": "diabetes"}]
    assert pipeline.upsert(role_arn=ROLE, description="again", tags=tags)["PipelineArn"] == arn  # update path
    assert pipeline.describe()["PipelineDescription"] == "again"
    assert sm_session.sagemaker_client.list_tags(ResourceArn=arn)["Tags"] == tags

    execution = pipeline.start()
    try:
        execution.wait(delay=2, max_attempts=450)
    except WaiterError:
        raise AssertionError(f"{execution.describe()}\n{execution.list_steps()}") from None
    steps = {s["StepName"]: s for s in execution.list_steps()}
    assert {s["StepStatus"] for s in steps.values()} == {"Succeeded"}, steps
    assert set(steps) == {"DiabetesProcess", "DiabetesTrain", "DiabetesEval", "DiabetesMSECond",
                          "RegisterDiabetesModel-RegisterModel", "CreateDiabetesModel-CreateModel"}
    assert steps["DiabetesMSECond"]["Metadata"]["Condition"]["Outcome"] == "True"
    package_arn = steps["RegisterDiabetesModel-RegisterModel"]["Metadata"]["RegisterModel"]["Arn"]
    sm = sm_session.sagemaker_client
    package = sm.describe_model_package(ModelPackageName=package_arn)
    train_arn = steps["DiabetesTrain"]["Metadata"]["TrainingJob"]["Arn"]
    train = sm.describe_training_job(TrainingJobName=train_arn.split("/")[-1])
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == (
        train["ModelArtifacts"]["S3ModelArtifacts"])
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    model_arn = steps["CreateDiabetesModel-CreateModel"]["Metadata"]["Model"]["Arn"]
    assert sm.describe_model(ModelName=model_arn.split("/")[-1])["PrimaryContainer"]["ModelDataUrl"] == (
        train["ModelArtifacts"]["S3ModelArtifacts"])

    # A parameter override at start: the threshold fails the condition; the preprocessing step is a cache hit.
    failing = pipeline.start(parameters={"MseThreshold": 1.5})
    with pytest.raises(WaiterError):
        failing.wait(delay=2, max_attempts=450)
    assert failing.describe()["PipelineExecutionStatus"] == "Failed"
    steps2 = {s["StepName"]: s for s in failing.list_steps()}
    assert steps2["DiabetesMSEFail"]["StepStatus"] == "Failed"
    assert steps2["DiabetesMSEFail"]["FailureReason"] == "Execution failed due to MSE > 1.5"
    assert steps2["DiabetesMSECond"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert steps2["DiabetesProcess"]["CacheHitResult"]["SourcePipelineExecutionArn"] == execution.arn
    assert "RegisterDiabetesModel-RegisterModel" not in steps2
    parameters = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=failing.arn)["PipelineParameters"]
    assert {"Name": "MseThreshold", "Value": "1.5"} in parameters
    listed = [e["PipelineExecutionArn"] for e in pipeline.list_executions()["PipelineExecutionSummaries"]]
    assert listed == [failing.arn, execution.arn]

    shown = subprocess.run([sys.executable, "-m", "opensage.cli.main", "pipeline", "show", failing.arn, "--home",
                            str(platform.home), "--no-color"], capture_output=True, text=True, check=True).stdout
    for box in ("✔ DiabetesProcess", "✔ DiabetesEval", "✔ DiabetesMSECond", "✘ DiabetesMSEFail",
                "○ RegisterDiabetesModel-RegisterModel"):
        assert box in shown, shown
    assert "DiabetesMSEFail: Execution failed due to MSE > 1.5" in shown


PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310"
SLOW_STEP = ("import os, time\ntime.sleep(float(os.environ.get('SLEEP', '0')))\n"
             "os.makedirs('/opt/ml/processing/output', exist_ok=True)\n"
             "open('/opt/ml/processing/output/done.txt', 'w').write('ok')\nprint('done', flush=True)\n")


def _boto(p):
    import boto3
    import botocore.session

    core = botocore.session.Session()  # explicit files: the process env may point at another platform
    core.set_config_variable("config_file", p.env["AWS_CONFIG_FILE"])
    core.set_config_variable("credentials_file", p.env["AWS_SHARED_CREDENTIALS_FILE"])
    core.set_config_variable("profile", "opensage")
    session = boto3.Session(botocore_session=core)
    return session.client("sagemaker"), session.client("s3")


def _slow_step(name: str, bucket: str, sleep: str, after: str | None = None) -> dict:
    source = (f"s3://{bucket}/kill/seed" if after is None else
              {"Get": f"Steps.{after}.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"})
    return {"Name": name, "Type": "Processing", "Arguments": {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                  "VolumeSizeInGB": 10}},
        "AppSpecification": {"ImageUri": PYTORCH_IMAGE,
                             "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/step.py"]},
        "Environment": {"SLEEP": sleep}, "RoleArn": ROLE,
        "ProcessingInputs": [
            {"InputName": "code", "S3Input": {"S3Uri": f"s3://{bucket}/kill/step.py", "S3DataType": "S3Prefix",
                                              "LocalPath": "/opt/ml/processing/input/code"}},
            {"InputName": "data", "S3Input": {"S3Uri": source, "S3DataType": "S3Prefix",
                                              "LocalPath": "/opt/ml/processing/input/data"}}],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
            "S3Uri": {"Std:Join": {"On": "/", "Values": [f"s3://{bucket}/kill/runs",
                                                         {"Get": "Execution.PipelineExecutionId"}, name]}},
            "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]}}}


def test_control_plane_killed_mid_execution_continues_after_restart(tmp_path):
    import json
    import os
    import signal
    import time

    from tests.e2e.conftest import start_platform, stop_platform

    home = tmp_path / "home"
    p = start_platform(home)
    sm, s3 = _boto(p)
    bucket = "kill-bucket"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="kill/step.py", Body=SLOW_STEP.encode())
    s3.put_object(Bucket=bucket, Key="kill/seed/seed.csv", Body=b"1,2\n")
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [
        _slow_step("Slow", bucket, "8"), _slow_step("Then", bucket, "0", after="Slow")]}
    sm.create_pipeline(PipelineName="killed", RoleArn=ROLE, PipelineDefinition=json.dumps(definition))
    arn = sm.start_pipeline_execution(PipelineName="killed")["PipelineExecutionArn"]
    deadline = time.time() + 60
    while True:
        steps = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
        if steps and steps[0]["StepStatus"] == "Executing":
            break
        assert time.time() < deadline, steps
        time.sleep(0.2)
    slow = steps[0]
    os.kill(p.proc.pid, signal.SIGKILL)  # the control plane dies; the job's agent keeps running
    p.proc.wait()
    p2 = start_platform(home)
    try:
        sm, _ = _boto(p2)
        deadline = time.time() + 180
        while (d := sm.describe_pipeline_execution(PipelineExecutionArn=arn))["PipelineExecutionStatus"] in (
                "Executing", "Stopping"):
            assert time.time() < deadline
            time.sleep(0.5)
        steps = {s["StepName"]: s for s in
                 sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]}
        exec_id = arn.rsplit("/", 1)[1]
        jobs = sm.list_processing_jobs(NameContains=exec_id)["ProcessingJobSummaries"]
        reasons = {j["ProcessingJobName"]: j.get("FailureReason") for j in jobs}  # what to look at if it failed
        assert d["PipelineExecutionStatus"] == "Succeeded", (steps, reasons)
        assert steps["Slow"]["Metadata"] == slow["Metadata"] and steps["Slow"]["AttemptCount"] == 1
        assert len(jobs) == 2 and {j["ProcessingJobStatus"] for j in jobs} == {"Completed"}
    finally:
        stop_platform(p2)
