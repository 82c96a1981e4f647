"""SDK v3 processing (`sagemaker` 3.x: sagemaker.core.processing ScriptProcessor / FrameworkProcessor, the
sagemaker.core.shapes ProcessingInput / ProcessingS3Input, and the sagemaker-core ProcessingJob resource) in
its own venv (.venv-sdk3, built by `make install-sdk3`), unmodified, against `opensage up`. Data generated
offline, as AWS's scikit-learn processing notebook does."""

from __future__ import annotations

import gzip
import os
import subprocess
import textwrap
from pathlib import Path

import boto3
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

SDK3_PYTHON = Path(__file__).resolve().parents[2] / ".venv-sdk3" / "bin" / "python"
BUCKET = "sagemaker-us-east-1-000000000000"

# One driver for the three flows; it prints "JOB <name> <status>" and the job's log lines it saw.
DRIVER = textwrap.dedent('''
    import logging, sys
    from sagemaker.core.helper.session_helper import Session
    from sagemaker.core.processing import FrameworkProcessor, ScriptProcessor
    from sagemaker.core.resources import ProcessingJob
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output

    IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    ROLE = "arn:aws:iam::000000000000:role/SageMakerRole"
    flow, code, data, out = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO)  # sagemaker-core logs through `logging`, unconfigured by default
    session = Session()


    def output(name, source):
        return ProcessingOutput(output_name=name, s3_output=ProcessingS3Output(
            s3_uri=f"{out}/{name}", local_path=source, s3_upload_mode="EndOfJob"))


    if flow == "script":
        processor = ScriptProcessor(role=ROLE, image_uri=IMAGE, command=["python3"], instance_count=1,
                                    instance_type="ml.m5.xlarge", base_job_name="sdk3-script",
                                    sagemaker_session=session)
        processor.run(code=code,
                      inputs=[ProcessingInput(input_name="census", s3_input=ProcessingS3Input(
                          s3_uri=data, local_path="/opt/ml/processing/input", s3_data_type="S3Prefix"))],
                      outputs=[output("train", "/opt/ml/processing/train"),
                               output("test", "/opt/ml/processing/test")],
                      arguments=["--train-test-split-ratio", "0.2"], wait=True, logs=True)
    elif flow == "framework":
        processor = FrameworkProcessor(image_uri=IMAGE, role=ROLE, command=["python3"], instance_count=1,
                                       instance_type="ml.m5.xlarge", base_job_name="sdk3-framework",
                                       sagemaker_session=session)
        processor.run(code="preprocessing.py", source_dir=code, requirements="requirements.txt",
                      inputs=[ProcessingInput(input_name="census", s3_input=ProcessingS3Input(
                          s3_uri=data, local_path="/opt/ml/processing/input", s3_data_type="S3Prefix"))],
                      outputs=[output("train", "/opt/ml/processing/train"),
                               output("test", "/opt/ml/processing/test")],
                      arguments=["--train-test-split-ratio", "0.25"], wait=True, logs=False)
    elif flow == "spark":
        from sagemaker.core.spark.processing import PySparkProcessor

        processor = PySparkProcessor(role=ROLE, framework_version="3.5", instance_count=1,
                                     instance_type="ml.m5.xlarge", base_job_name="sdk3-spark",
                                     sagemaker_session=session)
        processor.run(submit_app=code, submit_files=[code.replace("app.py", "threshold.txt")],
                      inputs=[ProcessingInput(input_name="census", s3_input=ProcessingS3Input(
                          s3_uri=data, local_path="/opt/ml/processing/input/census", s3_data_type="S3Prefix"))],
                      outputs=[output("high", "/opt/ml/processing/high")],
                      arguments=["--column", "hours"],
                      configuration=[{"Classification": "spark-defaults",
                                      "Properties": {"spark.sql.shuffle.partitions": "3"}}],
                      spark_event_logs_s3_uri=f"{out}/events", wait=True, logs=True)
    else:  # pipe: Pipe + Gzip input, run(wait=False), then the ProcessingJob resource waits
        processor = ScriptProcessor(role=ROLE, image_uri=IMAGE, command=["python3"], instance_count=1,
                                    instance_type="ml.m5.xlarge", base_job_name="sdk3-pipe",
                                    sagemaker_session=session)
        processor.run(code=code,
                      inputs=[ProcessingInput(input_name="census", s3_input=ProcessingS3Input(
                          s3_uri=data, local_path="/opt/ml/processing/input/census", s3_data_type="S3Prefix",
                          s3_input_mode="Pipe", s3_compression_type="Gzip"))],
                      outputs=[output("train", "/opt/ml/processing/train")], wait=False, logs=False)
        job = ProcessingJob.get(processing_job_name=processor.latest_job.processing_job_name)
        job.wait(poll=2, logs=True)  # sagemaker-core's own log tailer (MultiLogStreamHandler)
    job = ProcessingJob.get(processing_job_name=processor.latest_job.processing_job_name)
    print("JOB", job.processing_job_name, job.processing_job_status, flush=True)
    print("FAILURE", job.failure_reason, flush=True)
''')

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

PIPE_PREPROCESS = textwrap.dedent("""\
    import os, stat
    import pandas as pd

    fifo = "/opt/ml/processing/input/census_0"
    print("is fifo", stat.S_ISFIFO(os.stat(fifo).st_mode), flush=True)
    df = pd.read_csv(fifo)
    os.makedirs("/opt/ml/processing/train", exist_ok=True)
    df.to_csv("/opt/ml/processing/train/all.csv", index=False)
""")


SPARK_APP = textwrap.dedent("""\
    import argparse
    from pyspark import SparkFiles
    from pyspark.sql import SparkSession

    parser = argparse.ArgumentParser()
    parser.add_argument("--column", required=True)
    args = parser.parse_args()
    spark = SparkSession.builder.appName("sdk3-spark").getOrCreate()
    threshold = int(open(SparkFiles.get("threshold.txt")).read())  # submit_files: a local file
    df = spark.read.csv("/opt/ml/processing/input/census", header=True, inferSchema=True)
    high = df.filter(df[args.column] >= threshold)
    high.coalesce(1).write.mode("overwrite").csv("/opt/ml/processing/high", header=True)
    # One string per print: each argument would be a write of its own (PYTHONUNBUFFERED), log4j lines between.
    print(f"shuffle {spark.conf.get('spark.sql.shuffle.partitions')} high {high.count()}", flush=True)
    spark.stop()
""")


def _census(rows: int = 100) -> bytes:
    import numpy as np

    rng = np.random.default_rng(0)
    lines = ["age,hours,income"] + [f"{a},{h},{int(a * h > 1500)}" for a, h in
                                     zip(rng.integers(18, 70, rows), rng.integers(10, 60, rows), strict=True)]
    return ("\n".join(lines) + "\n").encode()


def _run(tmp_path: Path, flow: str, code: Path, data: str, out: str) -> tuple[str, str, str]:
    assert SDK3_PYTHON.exists(), "SDK v3 venv missing: run `make install-sdk3` (it builds .venv-sdk3)"
    (tmp_path / "driver.py").write_text(DRIVER)
    env = dict(os.environ, SAGEMAKER_SUPPRESS_V2_WARNING="1")
    done = subprocess.run([str(SDK3_PYTHON), str(tmp_path / "driver.py"), flow, str(code), data, out],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("JOB "))
    _, name, status = line.split()
    failure = next(x for x in done.stdout.splitlines() if x.startswith("FAILURE "))
    assert status == "Completed", failure
    return name, done.stdout, done.stderr


def _rows(uri: str) -> int:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return len(body.strip().splitlines()) - 1


def test_script_processor_v3_run_inputs_outputs_arguments_logs_completes(platform, tmp_path):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="sdk3-proc/script/raw/census.csv", Body=_census())
    code = tmp_path / "preprocessing.py"
    code.write_text(PREPROCESS)
    out = f"s3://{BUCKET}/sdk3-proc/script/out"
    name, printed, _ = _run(tmp_path, "script", code, f"s3://{BUCKET}/sdk3-proc/script/raw", out)
    assert "Received arguments {'train_test_split_ratio': 0.2}" in printed  # logs=True streamed the job's log
    assert _rows(f"{out}/train/train.csv") == 80 and _rows(f"{out}/test/test.csv") == 20
    desc = boto3.client("sagemaker").describe_processing_job(ProcessingJobName=name)
    assert desc["AppSpecification"]["ContainerEntrypoint"] == [
        "python3", "/opt/ml/processing/input/code/preprocessing.py"]


def test_framework_processor_v3_source_dir_requirements_completes(platform, tmp_path):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="sdk3-proc/fw/raw/census.csv", Body=_census())
    src = tmp_path / "src"
    src.mkdir()
    (src / "preprocessing.py").write_text("import helper\n" + PREPROCESS)
    (src / "helper.py").write_text("VALUE = 1\n")
    (src / "requirements.txt").write_text("pandas\n")  # in the image's environment already
    out = f"s3://{BUCKET}/sdk3-proc/fw/out"
    name, _, _ = _run(tmp_path, "framework", src, f"s3://{BUCKET}/sdk3-proc/fw/raw", out)
    assert _rows(f"{out}/test/test.csv") == 25
    desc = boto3.client("sagemaker").describe_processing_job(ProcessingJobName=name)
    assert desc["AppSpecification"]["ContainerEntrypoint"][0] == "/bin/bash"


def test_script_processor_v3_pipe_gzip_input_wait_false_then_resource_wait_completes(platform, tmp_path):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="sdk3-proc/pipe/raw/census.csv.gz", Body=gzip.compress(_census()))
    code = tmp_path / "pipe.py"
    code.write_text(PIPE_PREPROCESS)
    out = f"s3://{BUCKET}/sdk3-proc/pipe/out"
    name, printed, logged = _run(tmp_path, "pipe", code, f"s3://{BUCKET}/sdk3-proc/pipe/raw", out)
    assert "is fifo True" in printed + logged  # ProcessingJob.wait(logs=True) showed the job's log
    assert _rows(f"{out}/train/all.csv") == 100
    desc = boto3.client("sagemaker").describe_processing_job(ProcessingJobName=name)
    assert desc["ProcessingInputs"][0]["S3Input"]["S3InputMode"] == "Pipe"
    assert desc["ProcessingInputs"][0]["S3Input"]["S3CompressionType"] == "Gzip"


def test_pyspark_processor_v3_run_submit_files_configuration_event_logs_completes(platform, tmp_path):
    s3 = boto3.client("s3")
    census = _census()
    s3.put_object(Bucket=BUCKET, Key="sdk3-proc/spark/raw/census.csv", Body=census)
    app = tmp_path / "app.py"
    app.write_text(SPARK_APP)
    (tmp_path / "threshold.txt").write_text("40")
    out = f"s3://{BUCKET}/sdk3-proc/spark/out"
    name, printed, _ = _run(tmp_path, "spark", app, f"s3://{BUCKET}/sdk3-proc/spark/raw", out)
    expected = sum(1 for line in census.decode().splitlines()[1:] if int(line.split(",")[1]) >= 40)
    assert f"shuffle 3 high {expected}" in printed  # logs=True streamed it; spark-defaults applied
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="sdk3-proc/spark/out/")["Contents"]
    part = next(o["Key"] for o in listed if "/high/part-" in o["Key"])
    assert _rows(f"s3://{BUCKET}/{part}") == expected
    assert any("/events/" in o["Key"] for o in listed)
    desc = boto3.client("sagemaker").describe_processing_job(ProcessingJobName=name)
    assert desc["AppSpecification"]["ContainerEntrypoint"][0] == "smspark-submit"
