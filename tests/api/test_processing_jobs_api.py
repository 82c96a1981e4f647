"""CreateProcessingJob & co. through real boto3 against the in-process server, with real agent processes
(file:// object store). The pytorch-training image runs on the platform's interpreter (its environment's pins
are the platform's), so no environment is built here; the SDK flows on the scikit-learn image are in
tests/e2e/test_sdk_v2_processing.py."""

from __future__ import annotations

import gzip
import json
import time

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE

pytestmark = pytest.mark.slow

IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.1-cpu-py310"
CODE = "/opt/ml/processing/input/code"

SCRIPT = """\
import json, os, sys
rows = open("/opt/ml/processing/input/data/raw.csv").read().splitlines()
os.makedirs("/opt/ml/processing/output/train", exist_ok=True)
with open("/opt/ml/processing/output/train/train.csv", "w") as fh:
    fh.write("\\n".join(r.upper() for r in rows))
config = json.load(open("/opt/ml/config/processingjobconfig.json"))
resource = json.load(open("/opt/ml/config/resourceconfig.json"))
print("job", config["ProcessingJobName"], "host", resource["current_host"], "args", sys.argv[1:], flush=True)
print("env", os.environ.get("MY_SETTING"), flush=True)
"""


@pytest.fixture(scope="module")
def store(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    store.put_bytes("bucket1", "proc/code/prep.py", SCRIPT.encode())
    store.put_bytes("bucket1", "proc/raw/raw.csv", b"a,b\nc,d\n")
    store.put_bytes("bucket1", "proc/code/fail.py",
                    b"import sys\nopen('/opt/ml/output/message', 'w').write('bad rows: 3')\n"
                    b"print('about to fail', flush=True)\nsys.exit(3)\n")
    store.put_bytes("bucket1", "proc/code/slow.py",
                    b"import time\nfor i in range(600):\n"
                    b"    open(f'/opt/ml/processing/output/part-{i}.txt', 'w').write(str(i))\n"
                    b"    print('wrote', i, flush=True)\n    time.sleep(0.2)\n")
    store.put_bytes("bucket1", "proc/gz/raw.csv", gzip.compress(b"x,y\n"))
    return store


def request(name: str, script: str = "prep.py", **overrides) -> dict:
    req = {
        "ProcessingJobName": name,
        "RoleArn": ROLE,
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": IMAGE, "ContainerEntrypoint": ["python3", f"{CODE}/{script}"],
                             "ContainerArguments": ["--ratio", "0.2"]},
        "ProcessingInputs": [
            {"InputName": "code", "S3Input": {"S3Uri": f"s3://bucket1/proc/code/{script}",
                                              "LocalPath": CODE, "S3DataType": "S3Prefix"}},
            {"InputName": "data", "S3Input": {"S3Uri": "s3://bucket1/proc/raw", "LocalPath":
                                              "/opt/ml/processing/input/data", "S3DataType": "S3Prefix"}},
        ],
        "ProcessingOutputConfig": {"Outputs": [
            {"OutputName": "train", "S3Output": {"S3Uri": f"s3://bucket1/proc/out/{name}/train",
                                                 "LocalPath": "/opt/ml/processing/output/train",
                                                 "S3UploadMode": "EndOfJob"}}]},
        "Environment": {"MY_SETTING": "on"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "ExperimentConfig": {"ExperimentName": "exp", "TrialName": "trial"},
    }
    req.update(overrides)
    return req


def wait_done(sm, name: str, timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sm.describe_processing_job(ProcessingJobName=name)
        if d["ProcessingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        time.sleep(0.2)
    raise AssertionError(f"processing job {name} still {d['ProcessingJobStatus']} after {timeout}s")


def _code(err: ClientError) -> str:
    return err.response["Error"]["Code"]


def _log_text(server, name: str) -> str:
    logs = server.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/ProcessingJobs",
                                        logStreamNamePrefix=name + "/")["logStreams"]
    assert streams and streams[0]["logStreamName"].startswith(f"{name}/algo-1-")
    messages, token = [], None
    while True:  # every page: an environment built on first use logs many lines before the script's
        page = logs.get_log_events(logGroupName="/aws/sagemaker/ProcessingJobs",
                                   logStreamName=streams[0]["logStreamName"], startFromHead=True,
                                   **({"nextToken": token} if token else {}))
        messages += [e["message"] for e in page["events"]]
        if not page["events"] or page.get("nextForwardToken") == token:
            return "\n".join(messages)
        token = page.get("nextForwardToken")


def test_create_processing_job_inputs_outputs_config_completes(server, store):
    sm = server.client("sagemaker")
    arn = sm.create_processing_job(**request("proc-ok"))["ProcessingJobArn"]
    assert arn.endswith(":processing-job/proc-ok")
    d = wait_done(sm, "proc-ok")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["ProcessingStartTime"] <= d["ProcessingEndTime"]
    assert d["Environment"] == {"MY_SETTING": "on"}
    assert d["ExperimentConfig"]["TrialName"] == "trial"
    assert d["StoppingCondition"] == {"MaxRuntimeInSeconds": 600}
    assert d["ProcessingInputs"][0]["S3Input"]["S3InputMode"] == "File"
    assert store.get_bytes("bucket1", "proc/out/proc-ok/train/train.csv") == b"A,B\nC,D"
    text = _log_text(server, "proc-ok")
    assert "job proc-ok host algo-1 args ['--ratio', '0.2']" in text
    assert "env on" in text


def test_create_processing_job_duplicate_name_is_resource_in_use(server, store):
    sm = server.client("sagemaker")
    sm.create_processing_job(**request("proc-dup"))
    with pytest.raises(ClientError) as e:
        sm.create_processing_job(**request("proc-dup"))
    assert _code(e.value) == "ResourceInUse"
    assert "a processing job with this name already exists" in str(e.value)
    wait_done(sm, "proc-dup")


def test_create_processing_job_local_path_outside_processing_is_validation_exception(server, store):
    sm = server.client("sagemaker")
    req = request("proc-path")
    req["ProcessingInputs"][1]["S3Input"]["LocalPath"] = "/opt/ml/model"
    with pytest.raises(ClientError) as e:
        sm.create_processing_job(**req)
    assert _code(e.value) == "ValidationException"
    assert "processingInputs.2.member.s3Input.localPath" in str(e.value)
    assert "/opt/ml/processing/" in str(e.value)


def test_create_processing_job_dataset_definition_is_validation_exception(server, store):
    sm = server.client("sagemaker")
    req = request("proc-athena")
    req["ProcessingInputs"].append({"InputName": "athena", "DatasetDefinition": {
        "AthenaDatasetDefinition": {"Catalog": "c", "Database": "d", "QueryString": "select 1",
                                    "OutputS3Uri": "s3://bucket1/athena/", "OutputFormat": "PARQUET"},
        "LocalPath": "/opt/ml/processing/athena"}})
    with pytest.raises(ClientError) as e:
        sm.create_processing_job(**req)
    assert _code(e.value) == "ValidationException"
    assert "processingInputs.3.member.datasetDefinition" in str(e.value)


def test_processing_job_script_exits_nonzero_fails_with_exit_message(server, store):
    sm = server.client("sagemaker")
    sm.create_processing_job(**request("proc-fail", "fail.py"))
    d = wait_done(sm, "proc-fail")
    assert d["ProcessingJobStatus"] == "Failed"
    assert "exit code 3" in d["FailureReason"] and "about to fail" in d["FailureReason"]
    assert d["ExitMessage"] == "bad rows: 3"
    summaries = sm.list_processing_jobs(NameContains="proc-fail")["ProcessingJobSummaries"]
    assert [s["ProcessingJobStatus"] for s in summaries] == ["Failed"]


def test_processing_job_missing_input_fails_naming_uri(server, store):
    sm = server.client("sagemaker")
    req = request("proc-missing")
    req["ProcessingInputs"][1]["S3Input"]["S3Uri"] = "s3://bucket1/proc/nothing-here"
    sm.create_processing_job(**req)
    d = wait_done(sm, "proc-missing")
    assert d["ProcessingJobStatus"] == "Failed"
    assert "s3://bucket1/proc/nothing-here" in d["FailureReason"]


def test_processing_job_missing_output_bucket_fails_clearly(server, store):
    sm = server.client("sagemaker")
    req = request("proc-nobucket")
    req["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = "s3://no-such-bucket-9/out"
    sm.create_processing_job(**req)
    d = wait_done(sm, "proc-nobucket")
    assert d["ProcessingJobStatus"] == "Failed"
    assert "processing output 'train'" in d["FailureReason"] and "no-such-bucket-9" in d["FailureReason"]


def test_processing_job_unknown_image_fails_at_once_naming_image(server, store):
    sm = server.client("sagemaker")
    req = request("proc-image")
    req["AppSpecification"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own:1"
    sm.create_processing_job(**req)
    d = wait_done(sm, "proc-image", timeout=30)
    assert d["ProcessingJobStatus"] == "Failed"
    assert "my-own" in d["FailureReason"] and "sagemaker-scikit-learn" in d["FailureReason"]


def test_create_processing_job_gzip_file_mode_is_validation_exception(server, store):
    """SageMaker's rule: Gzip is decompressed while streaming, so only with S3InputMode Pipe."""
    sm = server.client("sagemaker")
    req = request("proc-gzip-file")
    req["ProcessingInputs"][1]["S3Input"].update(S3Uri="s3://bucket1/proc/gz", S3CompressionType="Gzip")
    with pytest.raises(ClientError) as e:
        sm.create_processing_job(**req)
    assert _code(e.value) == "ValidationException"
    assert "processingInputs.2.member.s3Input.s3CompressionType" in str(e.value) and "Pipe" in str(e.value)


PIPE_SCRIPT = """\
import os, stat, sys
local = "/opt/ml/processing/input/data"
fifo = local + "_0"
print("fifo", stat.S_ISFIFO(os.stat(fifo).st_mode), "dir", os.path.isdir(local), flush=True)
with open(fifo, "rb") as fh:  # SageMaker streams the input into a named pipe
    body = fh.read()
os.makedirs("/opt/ml/processing/output/train", exist_ok=True)
with open("/opt/ml/processing/output/train/train.csv", "wb") as out:
    out.write(body.upper())
print("read", len(body), "bytes", flush=True)
"""


def _pipe_request(name: str, uri: str, **s3_input) -> dict:
    req = request(name, "pipe.py")
    req["ProcessingInputs"][1]["S3Input"].update(S3Uri=uri, S3InputMode="Pipe", **s3_input)
    return req


def test_processing_job_pipe_input_streams_objects_through_fifo_completes(server, store):
    store.put_bytes("bucket1", "proc/code/pipe.py", PIPE_SCRIPT.encode())
    store.put_bytes("bucket1", "proc/pipe/a.csv", b"a,b\n")
    store.put_bytes("bucket1", "proc/pipe/b.csv", b"c,d\n")
    sm = server.client("sagemaker")
    sm.create_processing_job(**_pipe_request("proc-pipe", "s3://bucket1/proc/pipe"))
    d = wait_done(sm, "proc-pipe")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    assert d["ProcessingInputs"][1]["S3Input"]["S3InputMode"] == "Pipe"
    # The objects in key order, one stream, at <LocalPath>_0 (no directory at LocalPath itself).
    assert store.get_bytes("bucket1", "proc/out/proc-pipe/train/train.csv") == b"A,B\nC,D\n"
    assert "fifo True dir False" in _log_text(server, "proc-pipe")


def test_processing_job_pipe_gzip_input_is_decompressed_while_streaming(server, store):
    store.put_bytes("bucket1", "proc/code/pipe.py", PIPE_SCRIPT.encode())
    sm = server.client("sagemaker")
    sm.create_processing_job(**_pipe_request("proc-pipe-gz", "s3://bucket1/proc/gz", S3CompressionType="Gzip"))
    d = wait_done(sm, "proc-pipe-gz")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    assert store.get_bytes("bucket1", "proc/out/proc-pipe-gz/train/train.csv") == b"X,Y\n"


def test_processing_job_pipe_input_not_gzip_fails_naming_input(server, store):
    store.put_bytes("bucket1", "proc/code/pipe.py", PIPE_SCRIPT.encode())
    sm = server.client("sagemaker")
    sm.create_processing_job(**_pipe_request("proc-pipe-badgz", "s3://bucket1/proc/raw", S3CompressionType="Gzip"))
    d = wait_done(sm, "proc-pipe-badgz")
    assert d["ProcessingJobStatus"] == "Failed"
    assert "Pipe mode streaming" in d["FailureReason"] and "'data'" in d["FailureReason"]


def test_processing_job_manifest_file_input_downloads_listed_objects(server, store):
    store.put_bytes("bucket1", "proc/many/keep/one.csv", b"e,f\n")
    store.put_bytes("bucket1", "proc/many/skip.csv", b"never\n")
    store.put_bytes("bucket1", "proc/many/raw.csv", b"g,h\n")
    store.put_bytes("bucket1", "proc/manifest.json",
                    json.dumps([{"prefix": "s3://bucket1/proc/many/"}, "raw.csv", "keep/one.csv"]).encode())
    store.put_bytes("bucket1", "proc/code/tree.py",
                    b"import os\nfor d, _, fs in sorted(os.walk('/opt/ml/processing/input/data')):\n"
                    b"    for f in sorted(fs):\n        print('got', os.path.relpath(os.path.join(d, f), "
                    b"'/opt/ml/processing/input/data'), flush=True)\n")
    sm = server.client("sagemaker")
    req = request("proc-manifest", "tree.py")
    req["ProcessingInputs"][1]["S3Input"].update(S3Uri="s3://bucket1/proc/manifest.json", S3DataType="ManifestFile")
    sm.create_processing_job(**req)
    d = wait_done(sm, "proc-manifest")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    got = [line for line in _log_text(server, "proc-manifest").splitlines() if line.startswith("got ")]
    assert got == ["got raw.csv", "got keep/one.csv"]


def test_processing_job_app_managed_input_and_output_are_left_to_the_application(server, store):
    """AppManaged: the application reads / writes the data itself: LocalPath is optional, nothing is downloaded
    and the output is not uploaded by the platform."""
    store.put_bytes("bucket1", "proc/code/app.py",
                    b"import json, os\nconfig = json.load(open('/opt/ml/config/processingjobconfig.json'))\n"
                    b"print('uri', config['ProcessingInputs'][1]['S3Input']['S3Uri'], flush=True)\n"
                    b"print('downloaded', os.path.exists('/opt/ml/processing/input/data'), flush=True)\n"
                    b"os.makedirs('/opt/ml/processing/output/train', exist_ok=True)\n"
                    b"open('/opt/ml/processing/output/train/x.csv', 'w').write('x')\n")
    sm = server.client("sagemaker")
    req = request("proc-appmanaged", "app.py")
    req["ProcessingInputs"][1]["AppManaged"] = True
    del req["ProcessingInputs"][1]["S3Input"]["LocalPath"]
    req["ProcessingOutputConfig"]["Outputs"][0]["AppManaged"] = True
    sm.create_processing_job(**req)
    d = wait_done(sm, "proc-appmanaged")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    text = _log_text(server, "proc-appmanaged")
    assert "uri s3://bucket1/proc/raw" in text and "downloaded False" in text
    assert not list(store.list("bucket1", "proc/out/proc-appmanaged/"))


def test_stop_processing_job_mid_run_keeps_continuous_outputs(server, store):
    sm = server.client("sagemaker")
    req = request("proc-stop", "slow.py")
    req["ProcessingInputs"] = req["ProcessingInputs"][:1]
    req["ProcessingOutputConfig"]["Outputs"] = [
        {"OutputName": "parts", "S3Output": {"S3Uri": "s3://bucket1/proc/out/proc-stop/parts",
                                             "LocalPath": "/opt/ml/processing/output",
                                             "S3UploadMode": "Continuous"}}]
    sm.create_processing_job(**req)
    deadline = time.time() + 60
    while time.time() < deadline and not list(store.list("bucket1", "proc/out/proc-stop/parts/")):
        time.sleep(0.3)
    sm.stop_processing_job(ProcessingJobName="proc-stop")
    assert sm.describe_processing_job(ProcessingJobName="proc-stop")["ProcessingJobStatus"] in (
        "Stopping", "Stopped")
    d = wait_done(sm, "proc-stop")
    assert d["ProcessingJobStatus"] == "Stopped"
    assert list(store.list("bucket1", "proc/out/proc-stop/parts/"))
    with pytest.raises(ClientError):
        sm.stop_processing_job(ProcessingJobName="proc-stop")


def test_list_processing_jobs_filters_sort_and_paging(server, store):
    sm = server.client("sagemaker")
    for n in ("lst-a", "lst-b", "lst-c"):
        sm.create_processing_job(**request(n))
    for n in ("lst-a", "lst-b", "lst-c"):
        wait_done(sm, n)
    page = sm.list_processing_jobs(NameContains="lst-", SortBy="Name", SortOrder="Descending", MaxResults=2)
    assert [s["ProcessingJobName"] for s in page["ProcessingJobSummaries"]] == ["lst-c", "lst-b"]
    rest = sm.list_processing_jobs(NameContains="lst-", SortBy="Name", SortOrder="Descending", MaxResults=2,
                                   NextToken=page["NextToken"])
    assert [s["ProcessingJobName"] for s in rest["ProcessingJobSummaries"]] == ["lst-a"]
    done = sm.list_processing_jobs(NameContains="lst-", StatusEquals="Completed")["ProcessingJobSummaries"]
    assert len(done) == 3
    by_status = sm.list_processing_jobs(SortBy="Status", MaxResults=100)["ProcessingJobSummaries"]
    statuses = [s["ProcessingJobStatus"] for s in by_status]
    assert statuses == sorted(statuses)
    assert not sm.list_processing_jobs(NameContains="lst-", StatusEquals="Failed")["ProcessingJobSummaries"]


def test_processing_job_tags_by_arn(server, store):
    sm = server.client("sagemaker")
    arn = sm.create_processing_job(**request("proc-tags", Tags=[{"Key": "team", "Value": "ml"}]))[
        "ProcessingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "team", "Value": "ml"}]
    wait_done(sm, "proc-tags")


def test_describe_processing_job_missing_is_validation_exception(server):
    sm = server.client("sagemaker")
    with pytest.raises(ClientError) as e:
        sm.describe_processing_job(ProcessingJobName="nope-nope")
    assert _code(e.value) == "ValidationException"
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.stop_processing_job(ProcessingJobName="nope-nope")


def test_processing_config_file_is_the_request(server, store):
    sm = server.client("sagemaker")
    sm.create_processing_job(**request("proc-cfg"))
    wait_done(sm, "proc-cfg")
    path = server.settings.jobs_dir / "processing-proc-cfg" / "algo-1" / "ml" / "config" / "processingjobconfig.json"
    config = json.loads(path.read_text())
    assert config["AppSpecification"]["ContainerArguments"] == ["--ratio", "0.2"]
    assert config["ProcessingJobArn"].endswith("processing-job/proc-cfg")


def test_processing_job_max_runtime_reached_is_stopped(server, store):
    sm = server.client("sagemaker")
    req = request("proc-maxrt", "slow.py", StoppingCondition={"MaxRuntimeInSeconds": 2})
    req["ProcessingInputs"] = req["ProcessingInputs"][:1]
    sm.create_processing_job(**req)
    d = wait_done(sm, "proc-maxrt", timeout=60)
    assert d["ProcessingJobStatus"] == "Stopped"
    assert (d["ProcessingEndTime"] - d["ProcessingStartTime"]).total_seconds() < 30


def test_processing_job_runs_as_own_uid_with_temporary_credentials(server, store):
    import os

    store.put_bytes("bucket1", "proc/code/who.py",
                    b"import os\nprint('uid', os.getuid(), flush=True)\n"
                    b"print('key', os.environ.get('AWS_ACCESS_KEY_ID'), flush=True)\n"
                    b"print('token', bool(os.environ.get('AWS_SESSION_TOKEN')), flush=True)\n")
    sm = server.client("sagemaker")
    req = request("proc-who", "who.py")
    req["ProcessingInputs"] = req["ProcessingInputs"][:1]
    sm.create_processing_job(**req)
    d = wait_done(sm, "proc-who")
    assert d["ProcessingJobStatus"] == "Completed", d.get("FailureReason")
    deadline = time.time() + 30  # the log's last lines may be ingested just after the job's end
    while "token " not in (text := _log_text(server, "proc-who")) and time.time() < deadline:
        time.sleep(0.5)
    assert f"key {server.settings.credentials.access_key}" not in text
    assert "token True" in text
    if os.geteuid() == 0:
        assert "uid 0" not in text
