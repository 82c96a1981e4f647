"""Batch transform data capture (CreateTransformJob's DataCaptureConfig), as SageMaker writes it.

SageMaker does not copy a batch job's data: it writes *manifests* that point at the objects read and written
(Model Monitor's "Capture data from batch transform job"):

* ``<DestinationS3Uri>/input/yyyy/mm/dd/hh/<uuid>.json``: ``[{"prefix": "s3://<input prefix>/"}, "a.csv", ...]``
* ``<DestinationS3Uri>/output/yyyy/mm/dd/hh/<uuid>.json``: ``[{"prefix": "s3://<output path>/"}, "a.csv.out", ...]``

labelled with the hour the job started (UTC). With ``GenerateInferenceId`` every output record gets an inference
id (a random UUID) and the job's start time appended: two more columns for CSV records, the reserved fields
``SageMakerInferenceId`` / ``SageMakerInferenceTime`` for JSON / JSON Lines records.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

from opensage.objects.base import ObjectStore, split_s3_uri


def hour_prefix(start_time: float) -> str:
    return datetime.fromtimestamp(start_time, UTC).strftime("%Y/%m/%d/%H")


def inference_time(start_time: float) -> str:
    return datetime.fromtimestamp(start_time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def manifest(uris: list[str]) -> list[Any]:
    """A manifest (the TransformS3DataSource ManifestFile format) listing ``uris`` under their common folder."""
    common = os.path.commonprefix(uris)
    prefix = common[: common.rfind("/") + 1]
    if prefix.count("/") < 3:  # "s3://bucket" alone: keep the bucket's slash
        bucket = split_s3_uri(uris[0])[0]
        prefix = f"s3://{bucket}/"
    return [{"prefix": prefix}, *(u[len(prefix):] for u in uris)]


def write_manifests(store: ObjectStore, config: dict[str, Any], start_time: float, inputs: list[str],
                    outputs: list[str]) -> list[str]:
    """Write the input and output manifests of one instance's objects; returns their URIs."""
    bucket, base = split_s3_uri(config["DestinationS3Uri"])
    base = base.strip("/")
    written = []
    name = f"{uuid.uuid4()}.json"
    for kind, uris in (("input", inputs), ("output", outputs)):
        if not uris:
            continue
        key = "/".join(p for p in (base, kind, hour_prefix(start_time), name) if p)
        store.put_bytes(bucket, key, json.dumps(manifest(uris), separators=(",", ":")).encode())
        written.append(f"s3://{bucket}/{key}")
    return written


class InferenceIds:
    """Appends an inference id and the job's start time to each output record (GenerateInferenceId)."""

    def __init__(self, start_time: float) -> None:
        self.time = inference_time(start_time)

    def record(self, record: bytes) -> bytes:
        text = record.rstrip(b"\r\n")
        if not text.strip():
            return text
        inference_id = str(uuid.uuid4())
        if text.lstrip().startswith(b"{"):
            try:
                obj = json.loads(text)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                obj["SageMakerInferenceId"], obj["SageMakerInferenceTime"] = inference_id, self.time
                return json.dumps(obj, separators=(", ", ": ")).encode()
        return text + f",{inference_id},{self.time}".encode()

    def body(self, body: bytes) -> bytes:
        """A model answer holding one record per line: each line with its own id, newline-terminated."""
        lines = [self.record(line) for line in body.split(b"\n") if line.strip()]
        return b"".join(line + b"\n" for line in lines)
