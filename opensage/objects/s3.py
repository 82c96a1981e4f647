"""ObjectStore over any S3-compatible endpoint (SeaweedFS by default, AWS, MinIO, ...), via boto3.

boto3 is imported lazily: constructing an S3Store costs nothing until the first call.
Large files go through s3transfer's managed transfers (multipart, concurrent parts).
"""

from __future__ import annotations

import io
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from opensage.objects.base import ObjectInfo, ObjectNotFound

if TYPE_CHECKING:
    from botocore.exceptions import ClientError

MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
MAX_CONCURRENCY = 8
_GET_CHUNK = 1024 * 1024

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NoSuchBucket", "NotFound"})

# botocore's data files an S3 client loads (~0.12 s of JSON parsing per client: measured 0.14 s for a client on
# a fresh session vs 0.025 s with these already loaded). A process keeps them in one loader; a zygote loads
# them before it forks (runner/zygote.py PRELOAD), so a job's toolkit creates its client in ~25 ms.
_LOADER_DATA = ("endpoints", "partitions", "sdk-default-configuration", "_retry")
_loader: Any = None
_loader_data_path: str | None = None
_loader_lock = threading.Lock()


def botocore_loader() -> Any:
    """A process-wide botocore data loader with S3's service model loaded (thread-safe, read-only data).

    Shared only while ``AWS_DATA_PATH`` (extra model directories, read when a loader is created) is what it
    was at load time: a job that sets its own gets a fresh loader, as boto3 would give it."""
    global _loader, _loader_data_path
    data_path = os.environ.get("AWS_DATA_PATH")
    with _loader_lock:
        if _loader is None or data_path != _loader_data_path:
            from botocore.loaders import create_loader

            loader = create_loader(data_path)
            for name in _LOADER_DATA:
                loader.load_data(name)
            loader.load_service_model("s3", "service-2")
            loader.load_service_model("s3", "endpoint-rule-set-1")
            _loader, _loader_data_path = loader, data_path
        return _loader


def boto3_session() -> Any:
    """A fresh boto3 session (its own credentials / config resolution) on the shared data loader."""
    import boto3
    import botocore.session

    core = botocore.session.Session()
    core.register_component("data_loader", botocore_loader())
    return boto3.session.Session(botocore_session=core)


_shared_session: Any = None
_shared_session_env: tuple[tuple[str, str], ...] | None = None
_session_lock = threading.Lock()  # a boto3 session is not thread-safe: clients are made from it one at a time


def _aws_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


def _client_with_keys(**kwargs: Any) -> Any:
    """An S3 client given its keys, endpoint and region, on the process's shared boto3 session: a session
    costs ~15 ms to make and a client on a made one ~8 ms (a job's agent makes one before its first listing).
    Nothing of the session's own credential chain is used; it is made again when the process's ``AWS_*``
    environment changed (the profile and config files it reads)."""
    global _shared_session, _shared_session_env
    with _session_lock:
        env = _aws_environment()
        if _shared_session is None or env != _shared_session_env:
            _shared_session, _shared_session_env = boto3_session(), env
        return _shared_session.client("s3", **kwargs)


def warm_botocore_loader() -> None:
    """Zygote preload hook: load S3's botocore data before forking."""
    botocore_loader()


def warm_client_session() -> None:
    """Spare agent preload: S3's botocore data, and the shared session with one client made (its class and
    endpoint data then cached) before the job's keys exist. Not for zygotes: a job's toolkit makes its client
    from the job's environment (``boto3_session``), never on the shared session."""
    botocore_loader()
    _client_with_keys(endpoint_url="http://127.0.0.1:1", aws_access_key_id="preload",
                      aws_secret_access_key="preload", region_name="us-east-1")


class S3Store:
    def __init__(
        self,
        endpoint_url: str | None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        session_token: str | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region or "us-east-1"
        self._access_key = access_key
        self._secret_key = secret_key
        self._session_token = session_token
        self._client: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3Store(endpoint_url={self.endpoint_url!r}, region={self.region!r})"

    @property
    def client(self) -> Any:
        """The boto3 S3 client (created on first use; boto3 clients are thread-safe)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=max(10, MAX_CONCURRENCY * 2),
            connect_timeout=10,
            read_timeout=120,
        )
        kwargs = {"endpoint_url": self.endpoint_url, "aws_access_key_id": self._access_key,
                  "aws_secret_access_key": self._secret_key, "aws_session_token": self._session_token,
                  "region_name": self.region, "config": config}
        if self._access_key and self._secret_key:
            return _client_with_keys(**kwargs)
        return boto3_session().client("s3", **kwargs)  # the keys come from its own credential chain

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNKSIZE,
            max_concurrency=MAX_CONCURRENCY,
            use_threads=True,
        )

    def _transfer(self, run: Any) -> None:
        """Run one managed transfer and wait; raw ClientErrors surface (no boto3 wrapper)."""
        from boto3.s3.transfer import create_transfer_manager

        with create_transfer_manager(self.client, self._transfer_config()) as manager:
            run(manager).result()

    # -- reads ---------------------------------------------------------------------------------------
    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` in UTF-8 byte order of keys.

        The whole listing is collected and sorted before the first yield: SeaweedFS lists a directory's
        children before a sibling such as ``a/b-`` (tree order, not S3's byte order), and channel
        sharding and manifests depend on the exact order.
        """
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[ObjectInfo] = []
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                found.extend(
                    ObjectInfo(key=obj["Key"], size=int(obj["Size"])) for obj in page.get("Contents", ())
                )
        except _client_error() as exc:
            raise _translate(exc, bucket, prefix) from exc
        found.sort(key=lambda info: info.key.encode("utf-8", "surrogatepass"))
        yield from found

    def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self._get_whole_to_file(bucket, key, dest):
            return
        try:
            # s3transfer writes to a temporary name and renames, so dest is never half-written.
            self._transfer(lambda m: m.download(bucket, key, str(dest)))
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc

    def _get_whole_to_file(self, bucket: str, key: str, dest: Path) -> bool:
        """An object below the multipart threshold in one GET, written to a temporary name and renamed; False
        (nothing written) for a larger one or a body cut short: s3transfer's managed download does those, in
        parts, with its retries. For a small object the managed download cost a HEAD, a transfer manager and
        its threads: 22 ms vs 9 ms a file through the S3 proxy (a channel of many files: seconds)."""
        from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc
        body = response["Body"]
        try:
            if int(response.get("ContentLength") or 0) >= MULTIPART_THRESHOLD:
                return False
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                with open(tmp, "wb") as out:
                    for chunk in body.iter_chunks(_GET_CHUNK):
                        out.write(chunk)
                os.replace(tmp, dest)
            except (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionError):
                return False
            finally:
                tmp.unlink(missing_ok=True)
            return True
        finally:
            body.close()

    def open_read(self, bucket: str, key: str) -> BinaryIO:
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc
        return response["Body"]  # botocore StreamingBody (an io.IOBase): read(n), iter_chunks, close

    def open_range(self, bucket: str, key: str, start: int, end: int) -> BinaryIO:
        if end <= start:
            return io.BytesIO(b"")  # S3 refuses an empty Range
        try:
            response = self.client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc
        return response["Body"]

    def size(self, bucket: str, key: str) -> int:
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc
        return int(response["ContentLength"])

    def get_bytes(self, bucket: str, key: str) -> bytes:
        body = self.open_read(bucket, key)
        try:
            return body.read()
        finally:
            body.close()

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.head_object(Bucket=bucket, Key=key)
        except _client_error() as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return False
            raise
        return True

    def version(self, bucket: str, key: str) -> str:
        try:
            response = self.client.head_object(Bucket=bucket, Key=key)
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc
        return f"etag:{response.get('ETag', '')}:{response.get('ContentLength', '')}"

    # -- writes --------------------------------------------------------------------------------------
    def put_file(self, bucket: str, key: str, src: Path) -> None:
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"cannot upload {src} to s3://{bucket}/{key}: not a file")
        try:
            if src.stat().st_size < MULTIPART_THRESHOLD:
                # One PutObject (botocore retries it; the body is seekable): the managed upload's manager and
                # threads cost ~4 ms more a file (a processing job's outputs, many files: seconds).
                with open(src, "rb") as body:
                    self.client.put_object(Bucket=bucket, Key=key, Body=body)
            else:
                self._transfer(lambda m: m.upload(str(src), bucket, key))
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
        except _client_error() as exc:
            raise _translate(exc, bucket, key) from exc

    def ensure_bucket(self, bucket: str) -> None:
        try:
            self.client.head_bucket(Bucket=bucket)
            return
        except _client_error() as exc:
            if _error_code(exc) not in _NOT_FOUND_CODES:
                raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**kwargs)
        except _client_error() as exc:
            code = _error_code(exc)
            if code == "BucketAlreadyOwnedByYou":
                return
            if code == "BucketAlreadyExists":
                raise ValueError(
                    f"bucket {bucket!r} already exists and belongs to someone else at "
                    f"{self.endpoint_url or 'AWS'}; choose another bucket name"
                ) from exc
            raise


def _client_error() -> type[ClientError]:
    from botocore.exceptions import ClientError

    return ClientError


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: ClientError, bucket: str, key: str) -> Exception:
    """ObjectNotFound for missing bucket/key; every other S3 error passes through unchanged."""
    code = _error_code(exc)
    if code == "NoSuchBucket":
        return ObjectNotFound(f"bucket {bucket!r} does not exist (create it first with ensure_bucket)")
    if code in _NOT_FOUND_CODES:
        return ObjectNotFound(f"s3://{bucket}/{key} does not exist")
    return exc
