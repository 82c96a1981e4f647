"""The one storage interface: every byte of user data goes through an ObjectStore.

Stores are chosen by URI scheme (see ``opensage.objects.open_store``): ``s3://`` for any S3-compatible
service (SeaweedFS is the embedded default), ``file://`` for local paths, ``memory://`` for tests.
Keys are always the S3 key (no leading slash); ``bucket`` is the first URI component.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit


class ObjectNotFound(Exception):
    """Raised when a bucket or key does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


# SageMaker accepts S3 locations as https:// object URLs too (botocore's S3Uri / Url / S3OutputPath patterns are
# `(https|s3)://...`). AWS's S3 hosts, path-style (`s3.amazonaws.com`, `s3-<region>`, `s3.<region>`,
# `s3.dualstack.<region>`) and virtual-hosted (`<bucket>.` in front of the same): both name a bucket and a key
# on the platform's object store. Bucket names may contain dots, so the host is matched from its S3 suffix.
_S3_HOST = r"s3(?:[.-](?:dualstack\.)?[a-z0-9-]+)?\.amazonaws\.com(?:\.cn)?"
_PATH_STYLE = re.compile(_S3_HOST)
_VIRTUAL_HOSTED = re.compile(r"(?P<bucket>[a-z0-9][a-z0-9.-]*?)\." + _S3_HOST)


def normalize_s3_url(url: str) -> str:
    """Any S3 location SageMaker accepts -> ``s3://bucket/key``; ``s3://`` URIs come back unchanged.

    ``https://s3.us-east-1.amazonaws.com/bucket/key``, ``https://s3-us-east-1.amazonaws.com/bucket/key``,
    ``https://s3.amazonaws.com/bucket/key``, ``https://bucket.s3.amazonaws.com/key`` and
    ``https://bucket.s3.us-east-1.amazonaws.com/key`` all give ``s3://bucket/key`` (the key percent-decoded,
    as S3 decodes a request path). Raises ValueError for anything else (another host, a query string).
    """
    if url.startswith("s3://"):
        return url
    if not url.startswith("https://"):
        raise ValueError(f"not an S3 URI: {url!r} (expected s3://bucket/key or an https:// S3 object URL)")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.query or parts.fragment:
        raise ValueError(f"S3 URL {url!r} has a query string or fragment: give the object's plain URL")
    path = unquote(parts.path)
    if _PATH_STYLE.fullmatch(host):
        bucket, _, key = path.lstrip("/").partition("/")
    elif m := _VIRTUAL_HOSTED.fullmatch(host):
        bucket, key = m.group("bucket"), path.lstrip("/")
    else:
        raise ValueError(f"S3 URL {url!r} does not name an S3 host (expected https://s3.<region>.amazonaws.com/"
                         "<bucket>/<key> or https://<bucket>.s3.<region>.amazonaws.com/<key>)")
    if not bucket:
        raise ValueError(f"S3 URL has no bucket: {url!r}")
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` (or an https:// S3 object URL, see ``normalize_s3_url``) -> (``bucket``,
    ``some/key``). Raises ValueError if malformed."""
    if uri.startswith("https://"):
        uri = normalize_s3_url(uri)
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

    def open_range(self, bucket: str, key: str, start: int, end: int) -> BinaryIO:
        """A readable stream of bytes ``[start, end)`` of the object (an S3 ranged GET): several of them in
        parallel fill one file faster than one GET. ObjectNotFound if missing."""
        ...

    def size(self, bucket: str, key: str) -> int:
        """The object's size in bytes (S3: a HEAD). ObjectNotFound if missing."""
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
