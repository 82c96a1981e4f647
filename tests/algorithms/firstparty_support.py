"""Helpers for the first-party built-in algorithm tests: a SageMaker /opt/ml tree, the training process, the
model server's handler over the trained model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import opensage
from opensage.algorithms import formats

REPO_ROOT = Path(opensage.__file__).resolve().parent.parent


def recordio_bytes(features: Any, labels: np.ndarray | None = None) -> bytes:
    """What ``record_set()`` uploads: the SDK's own writer (dense or sparse)."""
    from sagemaker.amazon.common import write_numpy_to_dense_tensor, write_spmatrix_to_sparse_tensor

    buffer = io.BytesIO()
    if hasattr(features, "tocsr"):
        write_spmatrix_to_sparse_tensor(buffer, features, labels)
    else:
        write_numpy_to_dense_tensor(buffer, features, labels)
    return buffer.getvalue()


def ml_root(tmp_path: Path, hyperparameters: dict[str, Any], channels: dict[str, Any],
            config: dict[str, dict[str, Any]] | None = None) -> Path:
    """An /opt/ml tree; each channel is (features, labels) written as SDK recordio-protobuf shards, or raw
    bytes for a file ``part-0`` (with its config's ContentType)."""
    root = tmp_path / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({k: str(v) for k, v in hyperparameters.items()}))
    data_config = {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated",
                          "RecordWrapperType": "None", **(config or {}).get(name, {})} for name in channels}
    (root / "input" / "config" / "inputdataconfig.json").write_text(json.dumps(data_config))
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    for name, value in channels.items():
        directory = root / "input" / "data" / name
        directory.mkdir(parents=True)
        if isinstance(value, bytes):
            (directory / "part-0").write_bytes(value)
            continue
        features, labels = value
        half = features.shape[0] // 2  # two shards, as record_set() writes one per instance
        (directory / "matrix_0.pbr").write_bytes(recordio_bytes(features[:half], None if labels is None
                                                                else labels[:half]))
        (directory / "matrix_1.pbr").write_bytes(recordio_bytes(features[half:], None if labels is None
                                                                else labels[half:]))
        (directory / ".amazon.manifest").write_text("[]")
    return root


def run_training(algorithm_module: str, root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(root),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", f"opensage.algorithms.{algorithm_module}.train"], env=env,
                          capture_output=True, text=True, timeout=300)


def train_in_process(algorithm_module: str, root: Path) -> Path:
    """Train by calling the module's ``train`` (faster than a process; same code path minus the wrapper)."""
    import importlib

    from opensage.algorithms.content import MlPaths
    from opensage.algorithms.firstparty import JobInput

    module = importlib.import_module(f"opensage.algorithms.{algorithm_module}.train")
    return module.train(JobInput.read(MlPaths(root)))


def quality_metrics(log: str) -> dict[str, float]:
    """``channel:name`` -> last value of the ``#quality_metric`` lines without an epoch."""
    out = {}
    for line in log.splitlines():
        if "#quality_metric:" in line and "epoch=" not in line:
            _, _, rest = line.partition("#quality_metric: host=algo-1, ")
            channel, name, value = rest.split(" ")[0], rest.split(" ")[1], rest.rsplit("=", 1)[1]
            out[f"{channel}:{name}"] = float(value)
    return out


def handler(algorithm: str, model_dir: Path):
    """The model server's handler for a built-in algorithm over an unpacked model."""
    from opensage.serving.handlers import BuiltinHandler
    from opensage.serving.model_server import _serve_module

    h = BuiltinHandler(_serve_module(algorithm), model_dir)
    h.load()
    return h


def invoke(h, body: bytes, content_type: str, accept: str | None):
    from opensage.serving.handlers import Request

    return h.invoke(Request(body=body, content_type=content_type, accept=accept))


def sdk_records(body: bytes) -> list[Any]:
    """Response records parsed by the SDK's RecordDeserializer path (``read_records``)."""
    from sagemaker.amazon.common import read_records

    return read_records(io.BytesIO(body))


__all__ = ["formats", "handler", "invoke", "ml_root", "quality_metrics", "recordio_bytes", "run_training",
           "sdk_records", "train_in_process"]
