"""A job's S3 transfers: retried across a restart of the platform, and failures worded for the user.

The embedded object store restarts with the control plane (``opensage up``), so for a minute or two a
job's transfers find nothing listening (connection refused) or a gateway answering 503. SageMaker's
instances never see that; a job must not fail for it. ``RetryingStore`` wraps the job's object store
and waits such errors out (exponential backoff, up to ``UNREACHABLE_RETRY_SECONDS``) for every transfer
the agent does: channels, sourcedir, checkpoints, model / output upload, transform inputs and outputs.
Errors that waiting cannot fix (a missing object, access denied) surface at once.

``describe_s3_error`` turns botocore's text ("An error occurred (400) when calling the HeadObject
operation: Bad Request", "Parameter validation failed: ...") into what the user must fix.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from opensage.objects.base import ObjectInfo, ObjectNotFound, ObjectStore

T = TypeVar("T")

UNREACHABLE_RETRY_SECONDS = 120.0
FIRST_DELAY = 0.5
MAX_DELAY = 10.0

# botocore exceptions meaning "nobody answered" (its class names: importing botocore is not needed here)
_UNREACHABLE = {"EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
                "ConnectionError", "ProxyConnectionError", "ResponseStreamingError"}
# S3 answers meaning "busy or starting": retried like an unreachable store
_RETRYABLE_CODES = {"500", "502", "503", "504", "ServiceUnavailable", "SlowDown", "InternalError",
                    "RequestTimeout"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                 "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled"}
_MISSING_CODES = {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = (response.get("Error") or {}).get("Code")
    if code:
        return str(code)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(status) if status else None


def is_transient(exc: BaseException) -> bool:
    """True for an object store that is unreachable, restarting or busy (worth waiting for)."""
    if type(exc).__name__ in _UNREACHABLE or isinstance(exc, (ConnectionRefusedError, ConnectionResetError)):
        return True
    return _error_code(exc) in _RETRYABLE_CODES


def retry_transient(call: Callable[[], T], what: str, deadline_seconds: float | None = None,
                    log: Callable[[str], None] | None = None) -> T:
    """``call()``, retried with backoff while the object store is unreachable or busy."""
    limit = UNREACHABLE_RETRY_SECONDS if deadline_seconds is None else deadline_seconds
    deadline = time.monotonic() + limit
    delay = FIRST_DELAY
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            message = f"object store unavailable during {what} ({type(exc).__name__}); retrying in {delay:.1f} s"
            (log or _stderr)(message)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class RetryingStore:
    """An ObjectStore whose every call waits out an unreachable / restarting object store."""

    def __init__(self, inner: ObjectStore, deadline_seconds: float | None = None) -> None:
        self.inner = inner
        self.deadline_seconds = deadline_seconds

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return retry_transient(call, what, self.deadline_seconds)

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        # Collected inside the retry: a listing that fails halfway starts again.
        return iter(self._retry(lambda: list(self.inner.list(bucket, prefix)), f"listing s3://{bucket}/{prefix}"))

    def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
        self._retry(lambda: self.inner.get_to_file(bucket, key, dest), f"download of s3://{bucket}/{key}")

    def open_read(self, bucket: str, key: str) -> BinaryIO:
        return self._retry(lambda: self.inner.open_read(bucket, key), f"read of s3://{bucket}/{key}")

    def open_range(self, bucket: str, key: str, start: int, end: int) -> BinaryIO:
        return self._retry(lambda: self.inner.open_range(bucket, key, start, end),
                           f"read of s3://{bucket}/{key} bytes {start}-{end}")

    def size(self, bucket: str, key: str) -> int:
        return self._retry(lambda: self.inner.size(bucket, key), f"lookup of s3://{bucket}/{key}")

    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._retry(lambda: self.inner.get_bytes(bucket, key), f"download of s3://{bucket}/{key}")

    def put_file(self, bucket: str, key: str, src: Path) -> None:
        self._retry(lambda: self.inner.put_file(bucket, key, src), f"upload to s3://{bucket}/{key}")

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        self._retry(lambda: self.inner.put_bytes(bucket, key, data), f"upload to s3://{bucket}/{key}")

    def ensure_bucket(self, bucket: str) -> None:
        self._retry(lambda: self.inner.ensure_bucket(bucket), f"bucket check of {bucket}")

    def exists(self, bucket: str, key: str) -> bool:
        return self._retry(lambda: self.inner.exists(bucket, key), f"lookup of s3://{bucket}/{key}")

    def version(self, bucket: str, key: str) -> str:
        return self._retry(lambda: self.inner.version(bucket, key), f"lookup of s3://{bucket}/{key}")

    def __getattr__(self, name: str) -> object:  # anything else a concrete store offers
        return getattr(self.inner, name)


def describe_s3_error(exc: BaseException, uri: str) -> str:
    """What went wrong with ``uri``, in words the user can act on (never botocore's raw text alone)."""
    if isinstance(exc, ObjectNotFound):
        return f"{uri} does not exist (or its bucket does not)"
    name = type(exc).__name__
    if name == "ParamValidationError":
        return (f"{uri} is not a valid S3 location (bucket names are 3-63 lowercase letters, digits, '.' "
                f"and '-'; keys are up to 1024 bytes)")
    if is_transient(exc):
        return (f"the object store did not answer for {uri} (it was unreachable or restarting for longer than "
                f"{UNREACHABLE_RETRY_SECONDS:.0f} s); check that the platform is running")
    code = _error_code(exc)
    if code in _DENIED_CODES:
        return (f"access to {uri} was denied ({code}): the job's credentials are no longer valid (the job "
                f"ended?) or the object store refuses them")
    if code in _MISSING_CODES:
        return f"{uri} does not exist (or its bucket does not)"
    if code == "400" or code in ("InvalidBucketName", "InvalidArgument", "KeyTooLongError", "InvalidRequest"):
        return f"the object store refused the request for {uri} as invalid ({code}): check the bucket name and key"
    if code:
        return f"the object store answered {code} for {uri}"
    return f"{name} for {uri}: {exc}"
