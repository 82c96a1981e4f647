"""Stage a model artifact (``ModelDataUrl``) as an unpacked directory: a replica's or worker's /opt/ml/model.

Shared by endpoints, batch transform and multi-model loads. Directories are cached under ``models_root``
per URL *and object version* (ETag and size, from a HEAD of the object): overwriting ``model.tar.gz`` at
the same key (a user re-training to the same output path) gives a new endpoint the new model, while an
unchanged object - a replica restart, a second endpoint, a restarted control plane - reuses the directory
without downloading again. A running fleet keeps the directory it was planned with (its replicas name it).

Staging is safe to run from several processes at once (each unpacks into its own temporary directory, the
first rename wins, the others use the winner's copy).

Directories nothing uses any more are deleted by ``remove_unused`` (its caller, serving/model_cache.py, says
what is in use). Each return of a directory marks it used (the mtime of ``<dir>.source.json``), under a shared
lock on ``<models_root>/.lock``; ``remove_unused`` decides and renames away under the exclusive lock, so a
directory is never handed out and deleted at once, by any process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from opensage.objects.base import ObjectStore, normalize_s3_url, split_s3_uri
from opensage.runner.archive import extract_tar_gz

_TMP_PREFIX = ".tmp-"
_SOURCE_SUFFIX = ".source.json"
_LOCK_FILE = ".lock"
_UNCACHED = "uncached-"  # unpack_uncached's temporary directories: .tmp-uncached-<pid>-<ns>
EMPTY = "empty"  # the directory of a model without ModelDataUrl
_STALE_TMP_SECONDS = 6 * 3600  # a stager that crashed left its temporary directory behind


def staged_model_dir(models_root: Path, model_data_url: str | None, version: str = "") -> Path:
    """Where version ``version`` (see ``object_version``) of ``model_data_url`` is (or will be) unpacked."""
    if not model_data_url:
        return models_root / EMPTY
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
    models_root.mkdir(parents=True, exist_ok=True)
    if version is not None:
        target = staged_model_dir(models_root, model_data_url, version)
        if _hand_out_cached(target, model_data_url, version):
            return target
    tmp = _new_tmp(models_root, "")
    try:
        archive = tmp / "model.tar.gz"
        store.get_to_file(bucket, key, archive)
        # The object may have been overwritten between the HEAD and the download: then (or where the store
        # has no HEAD) the directory is keyed by what was actually downloaded.
        if version is None or object_version(store, bucket, key) != version:
            version = _file_digest(archive)
        target = staged_model_dir(models_root, model_data_url, version)
        if _hand_out_cached(target, model_data_url, version):
            return target
        _unpack(archive, key, tmp / "model", model_data_url)
        with _locked(models_root, exclusive=False):
            try:
                (tmp / "model").rename(target)
            except OSError:
                if not target.is_dir():  # not a lost race with another stager: a real failure
                    raise
                _mark_used(target, model_data_url, version)
            else:
                _write_source(target, model_data_url, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _hand_out_cached(target: Path, url: str, version: str) -> bool:
    """Whether ``target`` is staged already; if so it is marked used, under the shared lock."""
    with _locked(target.parent, exclusive=False):
        if target.exists():
            _mark_used(target, url, version)
            return True
    return False


def _new_tmp(root: Path, tag: str) -> Path:
    """A new temporary directory under ``root`` (stale ones of dead stagers removed first)."""
    _remove_stale_tmp(root)
    tmp = root / f"{_TMP_PREFIX}{tag}{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    return tmp


def _unpack(archive: Path, key: str, dest: Path, label: str) -> None:
    """``archive`` (the object at ``key``) -> ``dest``: extracted when it is a .tar.gz, else placed inside."""
    if key.endswith((".tar.gz", ".tgz")):
        extract_tar_gz(archive, dest, label=label)
        archive.unlink()
    else:
        dest.mkdir()
        archive.rename(dest / Path(key).name)


def unpack_uncached(store: ObjectStore, work_root: Path, model_data_url: str) -> Path:
    """The model unpacked into a directory of its own under ``work_root``, shared with nobody and cached for
    nobody: the caller deletes it with ``remove_uncached`` once done (a multi-model server with
    ``ModelCacheSetting: Disabled``, which SageMaker deletes from disk right after the invocation). One left
    by a killed process is removed as a stale temporary directory. Raises as ``stage_model``."""
    bucket, key = split_s3_uri(model_data_url)
    work_root.mkdir(parents=True, exist_ok=True)
    tmp = _new_tmp(work_root, _UNCACHED)
    try:
        archive = tmp / "model.tar.gz"
        store.get_to_file(bucket, key, archive)
        _unpack(archive, key, tmp / "model", model_data_url)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp / "model"


def remove_uncached(model_dir: Path) -> None:
    """Delete what ``unpack_uncached`` returned."""
    if model_dir.parent.name.startswith(f"{_TMP_PREFIX}{_UNCACHED}"):
        shutil.rmtree(model_dir.parent, ignore_errors=True)


def _source_file(target: Path) -> Path:
    return target.with_name(target.name + _SOURCE_SUFFIX)


def _write_source(target: Path, url: str, version: str) -> None:
    """``<dir>.source.json`` next to the directory: which object it came from (for people and for
    ``remove_unused``); its mtime is when the directory was last handed out."""
    try:
        _source_file(target).write_text(json.dumps({"url": url, "version": version, "staged_at": time.time()}))
    except OSError:
        pass


def _mark_used(target: Path, url: str, version: str) -> None:
    try:
        os.utime(_source_file(target))
    except FileNotFoundError:  # staged by a release that wrote none
        _write_source(target, url, version)
    except OSError:
        pass


@contextlib.contextmanager
def _locked(models_root: Path, exclusive: bool) -> Iterator[None]:
    """``flock`` on ``<models_root>/.lock``: shared while a directory is handed out, exclusive while unused
    ones are removed. Best effort where the lock file cannot be opened (then the idle time alone protects)."""
    try:
        fd = os.open(models_root / _LOCK_FILE, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_unused(models_root: Path, in_use: Collection[Path], urls_in_use: Collection[str],
                  idle_seconds: float, now: float | None = None) -> list[Path]:
    """Delete staged directories that are not in ``in_use``, were not staged from a URL in ``urls_in_use``
    and were not handed out for ``idle_seconds``; return them. ``in_use`` holds what running servers name (a
    fleet's ``model_dir``); ``urls_in_use`` covers processes the caller cannot see the directories of (a
    running transform job stages in its own worker). The idle time covers a directory handed out and not yet
    recorded anywhere."""
    now = time.time() if now is None else now
    keep = {path.name for path in in_use if path.parent == models_root}
    urls = {_normalized(url) for url in urls_in_use} - {None}
    removed: list[Path] = []
    trash: list[Path] = []
    try:
        entries = sorted(os.scandir(models_root), key=lambda e: e.name)
    except OSError:
        return removed
    with _locked(models_root, exclusive=True):
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name == EMPTY or name in keep or name.endswith(_SOURCE_SUFFIX):
                continue
            target = models_root / name
            source = _source_file(target)
            try:
                info = json.loads(source.read_text())
                last_used = source.stat().st_mtime
            except (OSError, ValueError):
                info = {}
                try:
                    last_used = entry.stat(follow_symlinks=False).st_mtime
                except OSError:
                    continue
            url = info.get("url") if isinstance(info, dict) else None
            if isinstance(url, str) and _normalized(url) in urls:
                continue
            if now - last_used < idle_seconds:
                continue
            away = models_root / f"{_TMP_PREFIX}unused-{name}"
            try:
                os.rename(target, away)
            except OSError:
                continue
            source.unlink(missing_ok=True)
            removed.append(target)
            trash.append(away)
        for entry in entries:  # a source file whose directory is gone (removed by hand)
            if entry.name.endswith(_SOURCE_SUFFIX) and not (models_root / entry.name[:-len(_SOURCE_SUFFIX)]).exists():
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime >= idle_seconds:
                        os.unlink(entry.path)
    for away in trash:  # outside the lock: stagers need not wait for the deletion
        shutil.rmtree(away, ignore_errors=True)
    return removed


def remove_idle_root(root: Path, idle_seconds: float, now: float | None = None) -> bool:
    """Delete a whole staging root (a multi-model cache nothing serves from any more) when none of its
    directories was handed out for ``idle_seconds``; whether it was. Under the root's exclusive lock, so no
    stager is handed a directory of it meanwhile."""
    now = time.time() if now is None else now
    try:
        changed = root.stat().st_mtime  # before the lock: creating the lock file would touch it
    except OSError:
        return False
    with _locked(root, exclusive=True):
        try:
            last_used = max([changed, *(p.stat().st_mtime for p in root.glob(f"*{_SOURCE_SUFFIX}"))])
        except OSError:
            return False
        if now - last_used < idle_seconds:
            return False
        away = root.with_name(f"{_TMP_PREFIX}unused-{root.name}")
        try:
            os.rename(root, away)
        except OSError:
            return False
    shutil.rmtree(away, ignore_errors=True)
    return True


def _normalized(url: str) -> str | None:
    try:
        return normalize_s3_url(url)
    except ValueError:
        return None


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
