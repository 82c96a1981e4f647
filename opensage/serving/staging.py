"""Stage a model artifact (``ModelDataUrl``) as an unpacked directory: a replica's or worker's /opt/ml/model.

Shared by endpoints and batch transform. Directories are cached per URL under ``models_root``; staging is
safe to run from several processes at once (each unpacks into its own temporary directory, the first
rename wins, the others use the winner's copy).
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from opensage.objects.base import ObjectStore, split_s3_uri
from opensage.runner.archive import extract_tar_gz


def staged_model_dir(models_root: Path, model_data_url: str | None) -> Path:
    """Where ``model_data_url`` is (or will be) unpacked."""
    if not model_data_url:
        return models_root / "empty"
    return models_root / hashlib.sha256(model_data_url.encode()).hexdigest()[:24]


def stage_model(store: ObjectStore, models_root: Path, model_data_url: str | None) -> Path:
    """model.tar.gz -> an unpacked directory (cached per URL); a non-archive object is placed inside it.

    Raises ObjectNotFound (missing object or bucket) and ValueError (malformed URI, unsafe archive).
    """
    target = staged_model_dir(models_root, model_data_url)
    if not model_data_url:
        target.mkdir(parents=True, exist_ok=True)
        return target
    if target.exists():
        return target
    bucket, key = split_s3_uri(model_data_url)
    tmp = models_root / f".tmp-{target.name}-{time.time_ns()}"
    tmp.mkdir(parents=True)
    try:
        archive = tmp / "model.tar.gz"
        store.get_to_file(bucket, key, archive)
        if key.endswith((".tar.gz", ".tgz")):
            extract_tar_gz(archive, tmp / "model")
            archive.unlink()
        else:
            (tmp / "model").mkdir()
            archive.rename(tmp / "model" / Path(key).name)
        try:
            (tmp / "model").rename(target)
        except OSError:
            if not target.is_dir():  # not a lost race with another stager: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
