"""Data capture: sampled InvokeEndpoint request/response pairs to S3 in SageMaker's capture format.

One JSON object per line (the input Model Monitor reads):
``{"captureData": {"endpointInput": {"observedContentType", "mode": "INPUT", "data", "encoding"},
"endpointOutput": {...}}, "eventMetadata": {"eventId", "inferenceId"?, "inferenceTime"}, "eventVersion": "0"}``
under ``<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl``. Encoding is CSV / JSON when
the content type is listed in CaptureContentTypeHeader (defaults: text/csv, application/json), else BASE64.

The request path only appends to an in-memory buffer; a background thread writes the files.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from opensage.objects.base import split_s3_uri

log = logging.getLogger(__name__)

DEFAULT_CSV = ("text/csv",)
DEFAULT_JSON = ("application/json",)


def _encoding(content_type: str, header: dict[str, Any]) -> str:
    media = (content_type or "").split(";")[0].strip().lower()
    if media in [c.lower() for c in header.get("CsvContentTypes") or DEFAULT_CSV]:
        return "CSV"
    if media in [c.lower() for c in header.get("JsonContentTypes") or DEFAULT_JSON]:
        return "JSON"
    return "BASE64"


def _payload(data: bytes, content_type: str, mode: str, header: dict[str, Any]) -> dict[str, Any]:
    encoding = _encoding(content_type, header)
    text = base64.b64encode(data).decode() if encoding == "BASE64" else data.decode("utf-8", errors="replace")
    return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}


def capture_record(config: dict[str, Any], request: bytes, request_type: str, response: bytes,
                   response_type: str, inference_id: str | None, when: float) -> dict[str, Any]:
    modes = {o.get("CaptureMode") for o in config.get("CaptureOptions") or []} or {"Input", "Output"}
    header = config.get("CaptureContentTypeHeader") or {}
    data: dict[str, Any] = {}
    if "Input" in modes:
        data["endpointInput"] = _payload(request, request_type, "INPUT", header)
    if "Output" in modes:
        data["endpointOutput"] = _payload(response, response_type, "OUTPUT", header)
    meta = {"eventId": str(uuid.uuid4()),
            "inferenceTime": datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if inference_id:
        meta["inferenceId"] = inference_id
    return {"captureData": data, "eventMetadata": meta, "eventVersion": "0"}


def sampled(config: dict[str, Any] | None) -> bool:
    if not config or not config.get("EnableCapture", True):
        return False
    return random.uniform(0, 100) < float(config.get("InitialSamplingPercentage", 100))


class DataCapture:
    def __init__(self, store_factory, interval: float = 5.0) -> None:
        self._store_factory = store_factory  # () -> ObjectStore, opened lazily in the flush thread
        self.interval = interval
        self._buffers: dict[tuple[str, str, str], list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, endpoint: str, variant: str, config: dict[str, Any], request: bytes, request_type: str,
               response: bytes, response_type: str, inference_id: str | None) -> None:
        now = time.time()
        line = json.dumps(capture_record(config, request, request_type, response, response_type, inference_id,
                                         now))
        prefix = config["DestinationS3Uri"].rstrip("/")
        hour = datetime.fromtimestamp(now, UTC).strftime("%Y/%m/%d/%H")
        with self._lock:
            self._buffers.setdefault((f"{prefix}/{endpoint}/{variant}", hour, endpoint), []).append(line)

    def flush(self) -> int:
        with self._lock:
            buffers, self._buffers = self._buffers, {}
        if not buffers:
            return 0
        store = self._store_factory()
        written = 0
        for (base, hour, _endpoint), lines in buffers.items():
            bucket, key_prefix = split_s3_uri(f"{base}/{hour}")
            name = f"{datetime.now(UTC).strftime('%M-%S-%f')[:-3]}-{uuid.uuid4().hex[:8]}.jsonl"
            try:
                store.put_bytes(bucket, f"{key_prefix}/{name}", ("\n".join(lines) + "\n").encode())
                written += len(lines)
            except Exception:
                log.exception("data capture: could not write %d records under %s", len(lines), base)
        return written

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="data-capture", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.flush()
