"""Built-in algorithm jobs with TrainingInputMode FastFile read their channel while it downloads
(runner.fastfile): the job's channel carries the streaming markers, the model is the one File mode trains."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from opensage.runner.fastfile import MARKERS
from tests.conftest import training_request, wait_for_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(server):
    store = server.store()
    store.ensure_bucket("bucket1")
    rng = np.random.default_rng(5)
    X = rng.random((2000, 4))
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    csv = "\n".join(",".join([str(a)] + [f"{v:.4f}" for v in row]) for a, row in zip(y, X, strict=True))
    store.put_bytes("bucket1", "data/train/part-1.csv", csv.encode())
    store.put_bytes("bucket1", "data/train/part-2.csv", (csv + "\n").encode())
    return store


def _model(store, name: str) -> bytes:
    blob = store.get_bytes("bucket1", f"out/{name}/output/model.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return tar.extractfile("xgboost-model").read()  # type: ignore[union-attr]


def test_create_training_job_builtin_xgboost_fastfile_streams_channel_and_trains_same_model(server, data):
    sm = server.client("sagemaker")
    for name, mode in (("ff-file", "File"), ("ff-fast", "FastFile")):
        sm.create_training_job(**training_request(
            name, AlgorithmSpecification={"TrainingImage": training_request("x")["AlgorithmSpecification"]
                                          ["TrainingImage"], "TrainingInputMode": mode}))
    for name in ("ff-file", "ff-fast"):
        d = wait_for_status(sm, name)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    # Both stream: a built-in reads its File-mode train channel only through content.py, so it streams too
    # (runner.fastfile.FILE_MODE_CHANNELS); the algorithm cannot tell the difference.
    for name in ("ff-fast", "ff-file"):
        marks = server.settings.home / "jobs" / name / "algo-1" / "ml" / "input" / "data" / MARKERS / "train"
        assert sorted(p.name for p in marks.iterdir() if p.name.endswith(".done")) == ["part-1.csv.done",
                                                                                         "part-2.csv.done"]
    assert _model(data, "ff-fast") == _model(data, "ff-file")
