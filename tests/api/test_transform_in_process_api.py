"""Batch transform of a built-in algorithm predicts in the worker's own process (no model-server HTTP hop),
and writes exactly the bytes the model-server path writes: every SplitType x AssembleWith x DataProcessing
combination is run both ways (``OPENSAGE_TRANSFORM_IN_PROCESS=false`` forces the model server) and compared,
failures included."""

from __future__ import annotations

import io
import itertools
import struct
import time

import numpy as np
import pytest

from tests.conftest import ROLE, XGB_IMAGE
from tests.modelfiles import breast_cancer_xgb

pytestmark = pytest.mark.slow

BUCKET = "ipbucket"
GROUP = "/aws/sagemaker/TransformJobs"
FILTERS = {"none": None,
           "join": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}}


@pytest.fixture(scope="module")
def data(server):
    """Model "ip-xgb" and one input prefix per SplitType (CSV lines, whole CSV, RecordIO-protobuf, TFRecord)."""
    blob, X, _, _ = breast_cancer_xgb(5)
    store, sm = server.store(), server.client("sagemaker")
    store.ensure_bucket(BUCKET)
    store.put_bytes(BUCKET, "models/xgb/model.tar.gz", blob)
    sm.create_model(ModelName="ip-xgb", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": XGB_IMAGE, "ModelDataUrl": f"s3://{BUCKET}/models/xgb/model.tar.gz"})
    rows = X[:120]
    plain = "".join(",".join(f"{v:.6g}" for v in row) + "\n" for row in rows).encode()
    with_ids = "".join(f"{i}," + ",".join(f"{v:.6g}" for v in row) + "\n" for i, row in enumerate(rows)).encode()
    from sagemaker.amazon.common import write_numpy_to_dense_tensor

    recordio = io.BytesIO()
    write_numpy_to_dense_tensor(recordio, np.asarray(rows, dtype=np.float32))
    tfrecord = b"".join(struct.pack("<Q", len(line)) + b"\0" * 4 + line + b"\0" * 4
                        for line in plain.splitlines(keepends=True))
    objects = {("Line", "none"): plain, ("Line", "join"): with_ids, ("None", "none"): plain,
               ("None", "join"): with_ids, ("RecordIO", "none"): recordio.getvalue(),
               ("RecordIO", "join"): with_ids, ("TFRecord", "none"): tfrecord, ("TFRecord", "join"): tfrecord}
    for (split, filt), body in objects.items():
        store.put_bytes(BUCKET, f"in/{split}-{filt}/part-0", body)
        store.put_bytes(BUCKET, f"in/{split}-{filt}/part-1", body[: len(body) // 2] if split == "None" else body)
    return objects


def _request(name: str, split: str, assemble: str, filt: str, strategy: str, in_process: bool) -> dict:
    content_type = "application/x-recordio-protobuf" if (split, filt) == ("RecordIO", "none") else "text/csv"
    req = {
        "TransformJobName": name, "ModelName": "ip-xgb", "BatchStrategy": strategy, "MaxPayloadInMB": 1,
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix",
                                                           "S3Uri": f"s3://{BUCKET}/in/{split}-{filt}/"}},
                           "ContentType": content_type, "SplitType": split},
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/out/{name}", "AssembleWith": assemble,
                            "Accept": "text/csv"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }
    if FILTERS[filt]:
        req["DataProcessing"] = FILTERS[filt]
    if not in_process:
        req["Environment"] = {"OPENSAGE_TRANSFORM_IN_PROCESS": "false"}
    return req


def _finish(sm, names: list[str], timeout: float = 240) -> dict[str, dict]:
    deadline, done = time.time() + timeout, {}
    while len(done) < len(names) and time.time() < deadline:
        for name in names:
            if name not in done:
                d = sm.describe_transform_job(TransformJobName=name)
                if d["TransformJobStatus"] not in ("InProgress", "Stopping"):
                    done[name] = d
        time.sleep(0.3)
    assert len(done) == len(names), f"still running: {sorted(set(names) - set(done))}"
    return done


def _server_log(logs, name: str) -> str:
    streams = logs.describe_log_streams(logGroupName=GROUP, logStreamNamePrefix=f"{name}/")["logStreams"]
    text = []
    for stream in streams:
        events = logs.get_log_events(logGroupName=GROUP, logStreamName=stream["logStreamName"],
                                     startFromHead=True)["events"]
        text += [e["message"] for e in events]
    return "\n".join(text)


@pytest.mark.parametrize("split", ["Line", "None", "RecordIO", "TFRecord"])
def test_create_transform_job_builtin_in_process_writes_same_bytes_as_model_server(server, data, split):
    store, sm, logs = server.store(), server.client("sagemaker"), server.client("logs")
    combos = list(itertools.product(["None", "Line"], list(FILTERS), ["MultiRecord", "SingleRecord"]))
    pairs: list[tuple[str, str]] = []
    for assemble, filt, strategy in combos:
        stem = f"ip-{split}-{assemble}-{filt}-{strategy}".lower()
        for in_process in (True, False):
            sm.create_transform_job(**_request(f"{stem}-{'local' if in_process else 'http'}", split, assemble,
                                               filt, strategy, in_process))
        pairs.append((f"{stem}-local", f"{stem}-http"))
    results = _finish(sm, [n for pair in pairs for n in pair])
    completed = 0
    for local, http in pairs:
        a, b = results[local], results[http]
        assert a["TransformJobStatus"] == b["TransformJobStatus"], (local, a.get("FailureReason"),
                                                                    b.get("FailureReason"))
        assert a.get("FailureReason") == b.get("FailureReason")
        if a["TransformJobStatus"] == "Completed":
            completed += 1
            for part in ("part-0", "part-1"):
                got = store.get_bytes(BUCKET, f"out/{local}/{part}.out")
                want = store.get_bytes(BUCKET, f"out/{http}/{part}.out")
                assert got == want, (local, part, got[:200], want[:200])
                assert got  # the model answered something
    if split == "TFRecord":  # XGBoost cannot read TFRecord frames: both paths fail alike, on the model's answer
        assert "model returned 400" in (results[pairs[0][0]].get("FailureReason") or "")
    else:
        assert completed, f"no {split} combination completed: nothing compared"
    # The in-process path really ran (and the forced one did not): the model server log stream says so.
    assert "[in-process] model loaded" in _server_log(logs, pairs[0][0])
    assert "[in-process] model loaded" not in _server_log(logs, pairs[0][1])


def test_create_transform_job_model_server_path_requires_its_token(server, data):
    """The transform's own model server (loopback) refuses requests without its replica token, like an
    endpoint's: another local user cannot reach the model or its user code (issue 7 / issue 13)."""
    import json

    sm = server.client("sagemaker")
    sm.create_transform_job(**_request("ip-token-http", "Line", "Line", "none", "MultiRecord", False))
    assert _finish(sm, ["ip-token-http"])["ip-token-http"]["TransformJobStatus"] == "Completed"
    (state_file,) = list((server.settings.jobs_dir / "ip-token-http").rglob("model_server.json"))
    state = json.loads(state_file.read_text())
    assert len(state.get("token") or "") >= 32
