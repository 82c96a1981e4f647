"""Stage a model artifact (``ModelDataUrl``) as an unpacked directory: a replica's or worker's /opt/ml/model.

Shared by endpoints, batch transform and multi-model loads. Directories are cached under ``models_root``
per URL *and object version* (ETag and size, from a HEAD of the object): overwriting ``model.tar.gz`` at
the same key (a user re-training to the same output path) gives a new endpoint the new model, while an
unchanged object - a replica restart, a second endpoint, a restarted control plane - reuses the directory
without downloading again. A running fleet keeps the directory it was planned with (its replicas name it),
so old versions are not deleted here.

Staging is safe to run from several processes at once (each unpacks into its own temporary directory, the
first rename wins, the others use the winner's copy).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from opensage.objects.base import ObjectNotFound, ObjectStore, split_s3_uri
from opensage.runner.archive import extract_tar_gz

_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 6 * 3600  # a stager that crashed left its temporary directory behind


def staged_model_dir(models_root: Path, model_data_url: str | None, version: str = "") -> Path:
    """Where version ``version`` (see ``object_version``) of ``model_data_url`` is (or will be) unpacked."""
    if not model_data_url:
        return models_root / "empty"
    return models_root / hashlib.sha256(f"{model_data_url}\n{version}".encode()).hexdigest()[:32]


def object_version(store: ObjectStore, bucket: str, key: str) -> str | None:
    """What identifies the object's current content without downloading it: ``etag:<ETag>:<size>`` from a
    HEAD, or None where the store cannot say (the caller then keys by a hash of the downloaded bytes).

    Raises ObjectNotFound for a missing object or bucket. The ObjectStore protocol has no HEAD yet: a
    store's ``head(bucket, key)`` (an object with ``etag`` and ``size``) is used when it has one, else the
    known stores are asked directly.
    """
    head = getattr(store, "head", None)
    if callable(head):
        info = head(bucket, key)
        etag, size = getattr(info, "etag", None), getattr(info, "size", None)
        return f"etag:{etag}:{size}" if etag else None
    from opensage.objects.file import FileStore
    from opensage.objects.memory import MemoryStore
    from opensage.objects.s3 import S3Store

    if isinstance(store, S3Store):
        return _s3_version(store, bucket, key)
    if isinstance(store, FileStore):
        # Writes are atomic renames, so a new object is a new inode with a new mtime.
        path = store._object_path(bucket, key)  # noqa: SLF001 - no public stat on the protocol yet
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(f"s3://{bucket}/{key} does not exist ({path})") from None
        return f"file:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    if isinstance(store, MemoryStore):
        data = store.get_bytes(bucket, key)
        return f"md5:{hashlib.md5(data).hexdigest()}:{len(data)}"  # noqa: S324 - an identity, as S3's ETag
    return None


def _s3_version(store: Any, bucket: str, key: str) -> str:
    from opensage.objects.s3 import _client_error, _translate

    try:
        response = store.client.head_object(Bucket=bucket, Key=key)
    except _client_error() as exc:
        raise _translate(exc, bucket, key) from exc
    return f"etag:{response.get('ETag', '')}:{response.get('ContentLength', '')}"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def stage_model(store: ObjectStore, models_root: Path, model_data_url: str | None) -> Path:
    """model.tar.gz -> an unpacked directory (cached per URL and object version); a non-archive object is
    placed inside it.

    Raises ObjectNotFound (missing object or bucket) and ValueError (malformed URI, unsafe or damaged
    archive: ``runner.archive.UnsafeArchiveError`` / ``ArchiveError``).
    """
    if not model_data_url:
        target = staged_model_dir(models_root, model_data_url)
        target.mkdir(parents=True, exist_ok=True)
        return target
    bucket, key = split_s3_uri(model_data_url)
    version = object_version(store, bucket, key)
    if version is not None:
        target = staged_model_dir(models_root, model_data_url, version)
        if target.exists():
            return target
    models_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(models_root)
    tmp = models_root / f"{_TMP_PREFIX}{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        archive = tmp / "model.tar.gz"
        store.get_to_file(bucket, key, archive)
        # The object may have been overwritten between the HEAD and the download: then (or where the store
        # has no HEAD) the directory is keyed by what was actually downloaded.
        if version is None or object_version(store, bucket, key) != version:
            version = _file_digest(archive)
        target = staged_model_dir(models_root, model_data_url, version)
        if target.exists():
            return target
        if key.endswith((".tar.gz", ".tgz")):
            extract_tar_gz(archive, tmp / "model", label=model_data_url)
            archive.unlink()
        else:
            (tmp / "model").mkdir()
            archive.rename(tmp / "model" / Path(key).name)
        try:
            (tmp / "model").rename(target)
        except OSError:
            if not target.is_dir():  # not a lost race with another stager: a real failure
                raise
        else:
            _write_source(target, model_data_url, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_source(target: Path, url: str, version: str) -> None:
    """``<dir>.source.json`` next to the directory: which object it came from (for people and a future GC)."""
    try:
        target.with_name(target.name + ".source.json").write_text(
            json.dumps({"url": url, "version": version, "staged_at": time.time()}))
    except OSError:
        pass


def _remove_stale_tmp(models_root: Path) -> None:
    """Best effort: temporary directories of stagers that died (never a live stager's: hours old)."""
    cutoff = time.time() - _STALE_TMP_SECONDS
    try:
        entries = list(os.scandir(models_root))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.startswith(_TMP_PREFIX) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue
