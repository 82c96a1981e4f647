"""The one storage interface: every byte of user data goes through an ObjectStore.

Stores are chosen by URI scheme (see ``opensage.objects.open_store``): ``s3://`` for any S3-compatible
service (SeaweedFS is the embedded default), ``file://`` for local paths, ``memory://`` for tests.
Keys are always the S3 key (no leading slash); ``bucket`` is the first URI component.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


class ObjectNotFound(Exception):
    """Raised when a bucket or key does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> (``bucket``, ``some/key``). Raises ValueError if malformed."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 URI has no bucket: {uri!r}")
    return bucket, key


class ObjectStore(Protocol):
    def list(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
        """Download one object to ``dest`` (parents created). ObjectNotFound if missing."""
        ...

    def open_read(self, bucket: str, key: str) -> BinaryIO:
        """A readable binary stream of the object (for Pipe mode). ObjectNotFound if missing."""
        ...

    def get_bytes(self, bucket: str, key: str) -> bytes: ...

    def put_file(self, bucket: str, key: str, src: Path) -> None: ...

    def put_bytes(self, bucket: str, key: str, data: bytes) -> None: ...

    def ensure_bucket(self, bucket: str) -> None: ...

    def exists(self, bucket: str, key: str) -> bool: ...

    def version(self, bucket: str, key: str) -> str:
        """What identifies the object's current content without reading it (S3: ETag and size, from a HEAD):
        equal while the object is unchanged, different after it is overwritten. ObjectNotFound if missing."""
        ...
