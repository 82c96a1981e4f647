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

from opensage.objects.base import ObjectStore, normalize_s3_url, split_s3_uri
from opensage.runner.archive import extract_tar_gz

_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 6 * 3600  # a stager that crashed left its temporary directory behind


def staged_model_dir(models_root: Path, model_data_url: str | None, version: str = "") -> Path:
    """Where version ``version`` (see ``object_version``) of ``model_data_url`` is (or will be) unpacked."""
    if not model_data_url:
        return models_root / "empty"
    url = normalize_s3_url(model_data_url)  # two spellings of one object share one directory
    return models_root / hashlib.sha256(f"{url}\n{version}".encode()).hexdigest()[:32]


def object_version(store: ObjectStore, bucket: str, key: str) -> str | None:
    """``store.version`` (ETag and size for S3), or None for a store without it (the caller then keys by a
    hash of the downloaded bytes). Raises ObjectNotFound for a missing object or bucket."""
    version = getattr(store, "version", None)
    return version(bucket, key) if callable(version) else None


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
