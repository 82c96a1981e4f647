"""Object storage: pick a store by endpoint (see ``open_store``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from opensage.objects.base import ObjectInfo, ObjectNotFound, ObjectStore, split_s3_uri
from opensage.runner.jobspec import ObjectStoreSpec

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "open_store",
    "split_s3_uri",
]


def open_store(spec: ObjectStoreSpec) -> ObjectStore:
    """The store ``spec.endpoint_url`` names.

    * ``file:///dir``   -> FileStore rooted at ``/dir`` (bucket = first directory level)
    * ``memory://[name]`` -> the process-wide MemoryStore of that name (tests)
    * anything else (incl. None = AWS) -> S3Store with path-style addressing and the given credentials
    """
    url = spec.endpoint_url or ""
    if url.startswith("file://"):
        from opensage.objects.file import FileStore

        return FileStore(_file_url_path(url))
    if url.startswith("memory://"):
        from opensage.objects.memory import shared_memory_store

        return shared_memory_store(url[len("memory://"):].strip("/"))
    from opensage.objects.s3 import S3Store

    return S3Store(
        endpoint_url=spec.endpoint_url,
        access_key=spec.access_key,
        secret_key=spec.secret_key,
        region=spec.region,
        session_token=spec.session_token,
    )


def _file_url_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        # file://relative/dir is a common slip; treat netloc+path as a relative path rather than failing.
        return Path(unquote(parsed.netloc + parsed.path))
    if not parsed.path:
        raise ValueError(f"file:// object store URL has no directory: {url!r} (use file:///abs/dir)")
    return Path(unquote(parsed.path))
