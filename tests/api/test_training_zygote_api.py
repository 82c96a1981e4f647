"""Issue 12 / 14: repeated built-in training jobs run in a child of a warm, pre-imported process (a zygote,
runner/zygote.py) instead of a fresh interpreter, through boto3 against the in-process server; the results
are those of a fresh process."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from opensage.runner.sandbox import namespace_supported
from tests.conftest import training_request, wait_for_status

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not namespace_supported(), reason="zygotes need root and mount namespaces")]

PCA_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/pca:1"
MODULE = "opensage.algorithms.pca.train"


def _pca_request(name: str) -> dict:
    return training_request(
        name, AlgorithmSpecification={"TrainingImage": PCA_IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"feature_dim": "6", "num_components": "2", "mini_batch_size": "100"},
        InputDataConfig=[{"ChannelName": "train", "ContentType": "text/csv", "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket1/pca/train"}}}])


def _zygote_pid(home: Path) -> int | None:
    for ready in (home / "zygotes").glob("*.json"):
        info = json.loads(ready.read_text())
        if info.get("module") == MODULE:
            return int(info["pid"])
    return None


def _reaped_children_cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[13]) + int(fields[14])  # cutime + cstime: the children it waited for


def _model(store, name: str) -> bytes:
    blob = store.get_bytes("bucket1", f"out/{name}/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return tar.extractfile("model_algo-1").read()


def test_create_training_job_builtin_repeated_runs_in_warm_zygote_same_model(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    rng = np.random.default_rng(3)
    X = rng.random((400, 2)) @ rng.random((2, 6)) + 0.01 * rng.random((400, 6))
    store.put_bytes("bucket1", "pca/train/data.csv", "\n".join(",".join(f"{v:.5f}" for v in r) for r in X).encode())
    sm = server.client("sagemaker")
    for i in range(2):  # a zygote is started once a second job of the module asked for one
        sm.create_training_job(**_pca_request(f"pca-cold-{i}"))
        assert wait_for_status(sm, f"pca-cold-{i}")["TrainingJobStatus"] == "Completed"
    deadline = time.monotonic() + 120
    while (pid := _zygote_pid(server.settings.home)) is None:
        assert time.monotonic() < deadline, "no zygote became ready"
        time.sleep(0.2)
    before = _reaped_children_cpu_ticks(pid)

    sm.create_training_job(**_pca_request("pca-warm"))
    d = wait_for_status(sm, "pca-warm")

    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert _reaped_children_cpu_ticks(pid) > before, "the job did not run as a child of the zygote"
    assert _model(store, "pca-warm") == _model(store, "pca-cold-0")  # what a fresh process computes
