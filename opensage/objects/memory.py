"""An in-process ObjectStore for tests: ``memory://`` (one shared store per name, process-wide)."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from opensage.objects.base import ObjectInfo, ObjectNotFound


class MemoryStore:
    """Buckets of bytes in a dict. Thread-safe; listing is a snapshot taken at call time."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[str, bytes]] = {}
        self._lock = threading.Lock()

    def _bucket(self, bucket: str) -> dict[str, bytes]:
        try:
            return self._buckets[bucket]
        except KeyError:
            raise ObjectNotFound(
                f"bucket {bucket!r} does not exist (create it first with ensure_bucket)"
            ) from None

    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        with self._lock:
            objects = self._bucket(bucket)
            snapshot = sorted(
                (k, len(v)) for k, v in objects.items() if k.startswith(prefix)
            )
        # S3 lists in UTF-8 byte order; Python's str order agrees except for surrogates (impossible here).
        for key, size in snapshot:
            yield ObjectInfo(key=key, size=size)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        with self._lock:
            objects = self._bucket(bucket)
            try:
                return objects[key]
            except KeyError:
                raise ObjectNotFound(f"s3://{bucket}/{key} does not exist") from None

    def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
        data = self.get_bytes(bucket, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        tmp.write_bytes(data)
        tmp.replace(dest)

    def open_read(self, bucket: str, key: str) -> BinaryIO:
        return io.BytesIO(self.get_bytes(bucket, key))

    def open_range(self, bucket: str, key: str, start: int, end: int) -> BinaryIO:
        return io.BytesIO(self.get_bytes(bucket, key)[start:max(start, end)])

    def size(self, bucket: str, key: str) -> int:
        return len(self.get_bytes(bucket, key))

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None:
        _check_key(key)
        with self._lock:
            self._bucket(bucket)[key] = bytes(data)

    def put_file(self, bucket: str, key: str, src: Path) -> None:
        self.put_bytes(bucket, key, Path(src).read_bytes())

    def ensure_bucket(self, bucket: str) -> None:
        with self._lock:
            self._buckets.setdefault(bucket, {})

    def exists(self, bucket: str, key: str) -> bool:
        with self._lock:
            return key in self._buckets.get(bucket, {})

    def version(self, bucket: str, key: str) -> str:
        data = self.get_bytes(bucket, key)
        return f"md5:{hashlib.md5(data).hexdigest()}:{len(data)}"  # noqa: S324 - an identity, as S3's ETag

    def clear(self) -> None:
        """Drop every bucket (tests use this to isolate themselves)."""
        with self._lock:
            self._buckets.clear()


def _check_key(key: str) -> None:
    if not key:
        raise ValueError("object key is empty (an S3 URI needs a key after the bucket: s3://bucket/key)")


_SHARED: dict[str, MemoryStore] = {}
_SHARED_LOCK = threading.Lock()


def shared_memory_store(name: str = "") -> MemoryStore:
    """The process-wide MemoryStore for ``memory://<name>`` (``memory://`` is name "")."""
    with _SHARED_LOCK:
        store = _SHARED.get(name)
        if store is None:
            store = _SHARED[name] = MemoryStore()
        return store
