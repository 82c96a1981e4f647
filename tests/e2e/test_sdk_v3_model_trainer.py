"""SDK v3 (`sagemaker` 3.x ModelTrainer) in its own venv (.venv-sdk3, built by `make install`), unmodified."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import boto3
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SDK3_PYTHON = Path(__file__).resolve().parents[2] / ".venv-sdk3" / "bin" / "python"

SCRIPT = textwrap.dedent('''
    import sys
    from sagemaker.train.model_trainer import ModelTrainer
    from sagemaker.core.training.configs import SourceCode, Compute, InputData
    src, data = sys.argv[1], sys.argv[2]
    trainer = ModelTrainer(
        training_image="683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        source_code=SourceCode(source_dir=src, entry_script="train.py"),
        role="arn:aws:iam::000000000000:role/SageMakerRole",
        compute=Compute(instance_type="ml.m5.large", instance_count=1),
        base_job_name="sdk3", hyperparameters={"epochs": 2, "opt": "adam"})
    trainer.train(input_data_config=[InputData(channel_name="train", data_source=data)], wait=True, logs=False)
    job = trainer._latest_training_job
    print("JOB", job.training_job_name, job.training_job_status)
''')


def test_model_trainer_runs_script_with_hyperparameters_and_channels(platform, tmp_path):
    assert SDK3_PYTHON.exists(), "SDK v3 venv missing: run `make install` (it builds .venv-sdk3)"
    bucket = "sagemaker-us-east-1-000000000000"
    boto3.client("s3").put_object(Bucket=bucket, Key="sdk3/train/a.csv", Body=b"1,2\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent('''
        import os, sys
        print("ARGS", " ".join(sys.argv[1:]), flush=True)
        print("TRAIN", sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])), flush=True)
        open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("ok")
    '''))
    (tmp_path / "run.py").write_text(SCRIPT)
    env = dict(os.environ, SAGEMAKER_SUPPRESS_V2_WARNING="1")
    out = subprocess.run([str(SDK3_PYTHON), str(tmp_path / "run.py"), str(src), f"s3://{bucket}/sdk3/train"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("JOB "))
    _, name, status = line.split()
    assert status == "Completed"
    logs = boto3.client("logs")
    stream = logs.describe_log_streams(logGroupName="/aws/sagemaker/TrainingJobs",
                                       logStreamNamePrefix=f"{name}/")["logStreams"][0]["logStreamName"]
    messages = [e["message"] for e in logs.get_log_events(logGroupName="/aws/sagemaker/TrainingJobs",
                                                          logStreamName=stream, startFromHead=True)["events"]]
    assert "ARGS --epochs 2 --opt adam" in messages
    assert "TRAIN ['a.csv']" in messages
