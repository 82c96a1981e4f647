"""SageMaker Python SDK v2 processors, unmodified, against `opensage up` (as AWS's scikit-learn processing
example notebook uses them; data generated offline)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

PREPROCESS = textwrap.dedent("""\
    import argparse, os
    import pandas as pd
    from sklearn.model_selection import train_test_split

    parser = argparse.ArgumentParser()
    parser.add_argument("--train-test-split-ratio", type=float, default=0.3)
    args = parser.parse_args()
    print("Received arguments", vars(args), flush=True)
    df = pd.read_csv("/opt/ml/processing/input/census.csv")
    train, test = train_test_split(df, test_size=args.train_test_split_ratio, random_state=0)
    os.makedirs("/opt/ml/processing/train", exist_ok=True)
    os.makedirs("/opt/ml/processing/test", exist_ok=True)
    train.to_csv("/opt/ml/processing/train/train.csv", index=False)
    test.to_csv("/opt/ml/processing/test/test.csv", index=False)
    print(f"train rows {len(train)} test rows {len(test)}", flush=True)
""")


def _census_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "census.csv"
    rows = ["age,hours,income"] + [f"{a},{h},{int(a * h > 1500)}" for a, h in
                                    zip(rng.integers(18, 70, 100), rng.integers(10, 60, 100), strict=True)]
    path.write_text("\n".join(rows) + "\n")
    return path


def _inputs(sm_session, tmp_path: Path, prefix: str):
    from sagemaker.processing import ProcessingInput

    uri = sm_session.upload_data(str(_census_csv(tmp_path)), bucket=sm_session.default_bucket(),
                                 key_prefix=f"e2e/processing/{prefix}/raw")
    return [ProcessingInput(source=uri, destination="/opt/ml/processing/input")]


def _outputs(sm_session, prefix: str):
    from sagemaker.processing import ProcessingOutput

    bucket = sm_session.default_bucket()
    return [ProcessingOutput(output_name="train", source="/opt/ml/processing/train",
                             destination=f"s3://{bucket}/e2e/processing/{prefix}/train"),
            ProcessingOutput(output_name="test", source="/opt/ml/processing/test",
                             destination=f"s3://{bucket}/e2e/processing/{prefix}/test")]


def _rows(sm_session, uri: str) -> int:
    from sagemaker.s3 import S3Downloader

    text = S3Downloader.read_file(uri, sagemaker_session=sm_session)
    return len(text.strip().splitlines()) - 1


def test_sklearn_processor_run_inputs_outputs_arguments_logs_completes(sm_session, tmp_path, capsys):
    from sagemaker.sklearn.processing import SKLearnProcessor

    code = tmp_path / "preprocessing.py"
    code.write_text(PREPROCESS)
    processor = SKLearnProcessor(framework_version="1.2-1", role=ROLE, instance_type="ml.m5.xlarge",
                                 instance_count=1, sagemaker_session=sm_session)
    processor.run(code=str(code), inputs=_inputs(sm_session, tmp_path, "skl"),
                  outputs=_outputs(sm_session, "skl"), arguments=["--train-test-split-ratio", "0.2"], logs=True)
    printed = capsys.readouterr().out
    assert "Received arguments {'train_test_split_ratio': 0.2}" in printed
    desc = processor.latest_job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"] for o in desc["ProcessingOutputConfig"]["Outputs"]}
    assert _rows(sm_session, outputs["train"] + "/train.csv") == 80
    assert _rows(sm_session, outputs["test"] + "/test.csv") == 20


def test_script_processor_python3_command_on_sklearn_image_completes(sm_session, tmp_path):
    from sagemaker.processing import ScriptProcessor

    code = tmp_path / "preprocessing.py"
    code.write_text(PREPROCESS)
    processor = ScriptProcessor(command=["python3"], image_uri=SKLEARN_IMAGE, role=ROLE,
                                instance_type="ml.m5.xlarge", instance_count=1, sagemaker_session=sm_session)
    processor.run(code=str(code), inputs=_inputs(sm_session, tmp_path, "script"),
                  outputs=_outputs(sm_session, "script"), arguments=["--train-test-split-ratio", "0.5"],
                  logs=False)
    desc = processor.latest_job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["AppSpecification"]["ContainerEntrypoint"][0] == "python3"
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"] for o in desc["ProcessingOutputConfig"]["Outputs"]}
    assert _rows(sm_session, outputs["test"] + "/test.csv") == 50


def test_framework_processor_sklearn_source_dir_requirements_wait_false_then_from_name(sm_session, tmp_path):
    from sagemaker.processing import FrameworkProcessor, ProcessingJob
    from sagemaker.sklearn.estimator import SKLearn

    src = tmp_path / "src"
    src.mkdir()
    (src / "preprocessing.py").write_text("import helper\n" + PREPROCESS)
    (src / "helper.py").write_text("VALUE = 1\n")
    (src / "requirements.txt").write_text("pandas\n")  # installed in the image's environment already
    processor = FrameworkProcessor(estimator_cls=SKLearn, framework_version="1.2-1", role=ROLE,
                                   instance_type="ml.m5.xlarge", instance_count=1, sagemaker_session=sm_session)
    processor.run(code="preprocessing.py", source_dir=str(src), inputs=_inputs(sm_session, tmp_path, "fw"),
                  outputs=_outputs(sm_session, "fw"), arguments=["--train-test-split-ratio", "0.25"],
                  wait=False, logs=False)
    name = processor.latest_job.job_name
    job = ProcessingJob.from_processing_name(sm_session, name)
    job.wait(logs=False)
    desc = job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["AppSpecification"]["ContainerEntrypoint"] == [
        "/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"]
    outputs = {o["OutputName"]: o["S3Output"]["S3Uri"] for o in desc["ProcessingOutputConfig"]["Outputs"]}
    assert _rows(sm_session, outputs["test"] + "/test.csv") == 25


def test_framework_processor_pytorch_source_dir_completes(sm_session, tmp_path):
    from sagemaker.processing import FrameworkProcessor
    from sagemaker.pytorch.estimator import PyTorch

    src = tmp_path / "src"
    src.mkdir()
    (src / "evaluate.py").write_text(textwrap.dedent("""\
        import json, os, torch
        os.makedirs("/opt/ml/processing/evaluation", exist_ok=True)
        value = float(torch.tensor([1.0, 2.0, 3.0]).mean())
        json.dump({"mean": value}, open("/opt/ml/processing/evaluation/evaluation.json", "w"))
        print("mean", value, flush=True)
    """))
    processor = FrameworkProcessor(estimator_cls=PyTorch, framework_version="2.1", py_version="py310",
                                   role=ROLE, instance_type="ml.m5.xlarge", instance_count=1,
                                   sagemaker_session=sm_session)
    from sagemaker.processing import ProcessingOutput

    bucket = sm_session.default_bucket()
    processor.run(code="evaluate.py", source_dir=str(src),
                  outputs=[ProcessingOutput(output_name="evaluation", source="/opt/ml/processing/evaluation",
                                            destination=f"s3://{bucket}/e2e/processing/torch/evaluation")],
                  logs=False)
    desc = processor.latest_job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    from sagemaker.s3 import S3Downloader

    text = S3Downloader.read_file(f"s3://{bucket}/e2e/processing/torch/evaluation/evaluation.json",
                                  sagemaker_session=sm_session)
    assert '"mean": 2.0' in text


def test_script_processor_python3_on_xgboost_image_completes(sm_session, tmp_path):
    import sagemaker
    from sagemaker.processing import ProcessingOutput, ScriptProcessor

    code = tmp_path / "check.py"
    code.write_text("import xgboost, os\nos.makedirs('/opt/ml/processing/out', exist_ok=True)\n"
                    "open('/opt/ml/processing/out/version.txt', 'w').write(xgboost.__version__)\n")
    image = sagemaker.image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    processor = ScriptProcessor(command=["python3"], image_uri=image, role=ROLE, instance_type="ml.m5.xlarge",
                                instance_count=1, sagemaker_session=sm_session)
    bucket = sm_session.default_bucket()
    processor.run(code=str(code), outputs=[ProcessingOutput(
        output_name="out", source="/opt/ml/processing/out", destination=f"s3://{bucket}/e2e/processing/xgb/out")],
        logs=False)
    desc = processor.latest_job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    from sagemaker.s3 import S3Downloader

    assert S3Downloader.read_file(f"s3://{bucket}/e2e/processing/xgb/out/version.txt",
                                  sagemaker_session=sm_session) == "1.7.4"


PIPE_PREPROCESS = textwrap.dedent("""\
    import os, stat
    import pandas as pd

    fifo = "/opt/ml/processing/input/census_0"  # Pipe mode: the input streams into <LocalPath>_0
    print("is fifo", stat.S_ISFIFO(os.stat(fifo).st_mode), flush=True)
    df = pd.read_csv(fifo)  # gzip-compressed in S3, decompressed while streaming
    os.makedirs("/opt/ml/processing/train", exist_ok=True)
    df[df.income == 1].to_csv("/opt/ml/processing/train/high.csv", index=False)
    print("streamed rows", len(df), flush=True)
""")


def test_sklearn_processor_run_pipe_mode_gzip_input_streams_through_fifo(sm_session, tmp_path, capsys):
    import gzip

    from sagemaker.processing import ProcessingInput, ProcessingOutput
    from sagemaker.sklearn.processing import SKLearnProcessor

    raw = _census_csv(tmp_path)
    packed = tmp_path / "census.csv.gz"
    packed.write_bytes(gzip.compress(raw.read_bytes()))
    bucket = sm_session.default_bucket()
    uri = sm_session.upload_data(str(packed), bucket=bucket, key_prefix="e2e/processing/pipe/raw")
    code = tmp_path / "pipe.py"
    code.write_text(PIPE_PREPROCESS)
    processor = SKLearnProcessor(framework_version="1.2-1", role=ROLE, instance_type="ml.m5.xlarge",
                                 instance_count=1, sagemaker_session=sm_session)
    processor.run(code=str(code),
                  inputs=[ProcessingInput(source=uri, destination="/opt/ml/processing/input/census",
                                          s3_input_mode="Pipe", s3_compression_type="Gzip")],
                  outputs=[ProcessingOutput(output_name="train", source="/opt/ml/processing/train",
                                            destination=f"s3://{bucket}/e2e/processing/pipe/train")],
                  logs=True)
    printed = capsys.readouterr().out
    desc = processor.latest_job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["ProcessingInputs"][0]["S3Input"]["S3InputMode"] == "Pipe"
    assert "is fifo True" in printed and "streamed rows 100" in printed
    expected = sum(1 for line in raw.read_text().splitlines()[1:] if line.endswith(",1"))
    assert _rows(sm_session, f"s3://{bucket}/e2e/processing/pipe/train/high.csv") == expected


def test_framework_processor_xgboost_source_dir_requirements_completes(sm_session, tmp_path):
    from sagemaker.processing import FrameworkProcessor, ProcessingOutput
    from sagemaker.s3 import S3Downloader
    from sagemaker.xgboost.estimator import XGBoost

    src = tmp_path / "src"
    src.mkdir()
    (src / "evaluate.py").write_text(textwrap.dedent("""\
        import json, os
        import numpy as np
        import xgboost as xgb
        rng = np.random.default_rng(0)
        x = rng.normal(size=(200, 3))
        y = (x[:, 0] + x[:, 1] > 0).astype(int)
        booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=y), num_boost_round=5)
        accuracy = float(((booster.predict(xgb.DMatrix(x)) > 0.5) == y).mean())
        os.makedirs("/opt/ml/processing/evaluation", exist_ok=True)
        json.dump({"xgboost": xgb.__version__, "accuracy": accuracy},
                  open("/opt/ml/processing/evaluation/evaluation.json", "w"))
    """))
    (src / "requirements.txt").write_text("numpy\n")  # in the image's environment already
    processor = FrameworkProcessor(estimator_cls=XGBoost, framework_version="1.7-1", role=ROLE,
                                   instance_type="ml.m5.xlarge", instance_count=1, sagemaker_session=sm_session)
    bucket = sm_session.default_bucket()
    processor.run(code="evaluate.py", source_dir=str(src),
                  outputs=[ProcessingOutput(output_name="evaluation", source="/opt/ml/processing/evaluation",
                                            destination=f"s3://{bucket}/e2e/processing/xgb-fw/evaluation")],
                  logs=False)
    desc = processor.latest_job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert "sagemaker-xgboost:1.7-1" in desc["AppSpecification"]["ImageUri"]
    import json

    result = json.loads(S3Downloader.read_file(f"s3://{bucket}/e2e/processing/xgb-fw/evaluation/evaluation.json",
                                               sagemaker_session=sm_session))
    assert result["xgboost"] == "1.7.4" and result["accuracy"] > 0.9
