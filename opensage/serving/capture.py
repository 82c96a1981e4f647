"""Data capture: sampled InvokeEndpoint request/response pairs to S3 in SageMaker's capture format.

One JSON object per line (the input Model Monitor reads):
``{"captureData": {"endpointInput": {"observedContentType", "mode": "INPUT", "data", "encoding"},
"endpointOutput": {...}}, "eventMetadata": {"eventId", "inferenceId"?, "inferenceTime"}, "eventVersion": "0"}``
under ``<DestinationS3Uri>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl``. Encoding is CSV / JSON when
the content type is listed in CaptureContentTypeHeader (defaults: text/csv, application/json), else BASE64.

The request path only appends to an in-memory buffer; a background thread writes the files. Records are
never dropped: files that cannot be written yet are spooled to disk and retried (see ``DataCapture``).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
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
    """Buffers captured records and writes them to S3; never drops one.

    Every ``interval`` the buffer becomes files to write (one per endpoint/variant/hour), each with its final
    key chosen once. With ``spool_dir`` they are first written there (0700) and deleted only once stored, so
    records outlive an object store outage *and* a restart of the control plane (the next start sends what
    is left); without it they wait in memory. A write that fails is retried with backoff (1 s doubling to
    ``max_backoff``); the same key is written again, so a retry never duplicates records.
    """

    def __init__(self, store_factory, interval: float = 5.0, spool_dir: Path | None = None,
                 max_backoff: float = 60.0) -> None:
        self._store_factory = store_factory  # () -> ObjectStore, opened lazily in the flush thread
        self.interval = interval
        self.spool_dir = Path(spool_dir) if spool_dir is not None else None
        self.max_backoff = max_backoff
        self._buffers: dict[tuple[str, str, str], list[str]] = {}
        self._pending: list[_Batch] = []  # not yet stored, oldest first
        self._lock = threading.Lock()
        self._stage_lock = threading.Lock()  # one flush at a time from taking the buffer to queueing its batches
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._retry_at = 0.0
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.spool_dir, 0o700)  # captured payloads are the users' data
            self._pending.extend(_Batch.load(path) for path in sorted(self.spool_dir.glob("*.capture")))
            self._pending = [b for b in self._pending if b is not None]

    @property
    def pending(self) -> int:
        """Records captured but not stored yet."""
        with self._lock:
            return sum(b.records for b in self._pending) + sum(len(v) for v in self._buffers.values())

    def record(self, endpoint: str, variant: str, config: dict[str, Any], request: bytes, request_type: str,
               response: bytes, response_type: str, inference_id: str | None) -> None:
        now = time.time()
        line = json.dumps(capture_record(config, request, request_type, response, response_type, inference_id,
                                         now))
        prefix = config["DestinationS3Uri"].rstrip("/")
        hour = datetime.fromtimestamp(now, UTC).strftime("%Y/%m/%d/%H")
        with self._lock:
            self._buffers.setdefault((f"{prefix}/{endpoint}/{variant}", hour, endpoint), []).append(line)

    def flush(self, force: bool = False) -> int:
        """Turn the buffer into batches (spooled) and store what can be stored; returns records stored.

        While the store is failing, a flush before the backoff is over only spools (unless ``force``). A flush
        called while another is under way (the flush thread's) waits for it: it returns once the records
        captured before the call are stored or kept, never while they sit between the buffer and the store."""
        with self._stage_lock:  # records taken from the buffer are queued before another flush looks at the queue
            with self._lock:
                buffers, self._buffers = self._buffers, {}
            for (base, hour, _endpoint), lines in buffers.items():
                bucket, key_prefix = split_s3_uri(f"{base}/{hour}")
                name = f"{datetime.now(UTC).strftime('%M-%S-%f')[:-3]}-{uuid.uuid4().hex[:8]}.jsonl"
                batch = _Batch(bucket, f"{key_prefix}/{name}", ("\n".join(lines) + "\n").encode(), len(lines))
                if self.spool_dir is not None:
                    batch.spool(self.spool_dir)
                with self._lock:
                    self._pending.append(batch)
        if not force and time.monotonic() < self._retry_at:
            return 0
        return self._send_pending()  # waits for a send under way: its batches are then stored or still queued

    def _send_pending(self) -> int:
        with self._send_lock:
            with self._lock:
                batches = list(self._pending)
            if not batches:
                return 0
            written = 0
            try:
                store = self._store_factory()
                for batch in batches:
                    store.put_bytes(batch.bucket, batch.key, batch.data)
                    batch.done()
                    with self._lock:
                        self._pending.remove(batch)
                    written += batch.records
            except Exception as exc:  # noqa: BLE001 - kept and retried: the store may be restarting
                self._failures += 1
                delay = min(self.max_backoff, 2.0 ** (self._failures - 1))
                self._retry_at = time.monotonic() + delay
                log_at = log.warning if self._failures == 1 else log.debug
                log_at("data capture: could not write to the object store (%s: %s); %d records kept%s, "
                       "retrying in %.0f s", type(exc).__name__, exc, self.pending,
                       f" in {self.spool_dir}" if self.spool_dir else " in memory", delay)
            else:
                if self._failures:
                    log.warning("data capture: object store writable again; pending records written")
                self._failures, self._retry_at = 0, 0.0
            return written

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="data-capture", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        self.flush()  # what a previous run left in the spool goes first
        while not self._stop.wait(self._next_wait()):
            self.flush()

    def _next_wait(self) -> float:
        if self._retry_at:
            return max(0.05, min(self.interval, self._retry_at - time.monotonic()))
        return self.interval

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.flush(force=True)
        left = self.pending
        if left:
            where = f"kept in {self.spool_dir} for the next start" if self.spool_dir else "lost (no spool dir)"
            log.error("data capture: %d records could not be written at shutdown: %s", left, where)


class _Batch:
    """One capture file to write: its bucket, its final key and its bytes (and its spool file, if any)."""

    def __init__(self, bucket: str, key: str, data: bytes, records: int, path: Path | None = None) -> None:
        self.bucket, self.key, self.data, self.records, self.path = bucket, key, data, records, path

    def spool(self, directory: Path) -> None:
        """Write it to ``directory`` (atomically: a half-written file is never read back)."""
        path = directory / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.capture"
        tmp = path.with_suffix(".tmp")
        header = json.dumps({"bucket": self.bucket, "key": self.key, "records": self.records}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(header + b"\n" + self.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.path = path

    @classmethod
    def load(cls, path: Path) -> _Batch | None:
        try:
            header, _, data = path.read_bytes().partition(b"\n")
            meta = json.loads(header)
            return cls(meta["bucket"], meta["key"], data, int(meta.get("records", 0)), path)
        except (OSError, ValueError, KeyError, TypeError):
            log.error("data capture: unreadable spool file %s left in place", path)
            return None

    def done(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
