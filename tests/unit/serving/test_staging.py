"""serving/staging.py: model artifacts unpacked once per URL *and object version* (issue 7 item 8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opensage.objects.base import ObjectNotFound
from opensage.objects.file import FileStore
from opensage.objects.memory import MemoryStore
from opensage.objects.s3 import S3Store
from opensage.serving.staging import object_version, stage_model, staged_model_dir
from tests.modelfiles import tar_gz

URL = "s3://bucket1/job/output/model.tar.gz"


class CountingFileStore(FileStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.downloads = 0

    def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
        self.downloads += 1
        super().get_to_file(bucket, key, dest)


@pytest.fixture
def store(tmp_path: Path) -> CountingFileStore:
    store = CountingFileStore(tmp_path / "s3")
    store.ensure_bucket("bucket1")
    return store


def test_stage_model_overwritten_object_stages_new_content(store: CountingFileStore, tmp_path: Path) -> None:
    """A user re-training to the same output path gets the new model on the next endpoint."""
    models = tmp_path / "models"
    store.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v1"}))
    first = stage_model(store, models, URL)
    assert (first / "weights").read_bytes() == b"v1"
    store.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v2-retrained"}))
    second = stage_model(store, models, URL)
    assert (second / "weights").read_bytes() == b"v2-retrained"
    assert second != first
    assert (first / "weights").read_bytes() == b"v1"  # a running fleet keeps the directory it was given


def test_stage_model_unchanged_object_same_dir_no_second_download(store: CountingFileStore,
                                                                  tmp_path: Path) -> None:
    models = tmp_path / "models"
    store.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v1"}))
    first = stage_model(store, models, URL)
    # A replica restart, a second endpoint, a restarted control plane (a new store object): all hits.
    again = stage_model(store, models, URL)
    restarted = CountingFileStore(store.root)
    after_restart = stage_model(restarted, models, URL)
    assert first == again == after_restart
    assert store.downloads == 1 and restarted.downloads == 0
    assert not [p for p in models.iterdir() if p.name.startswith(".tmp-")]


def test_stage_model_memory_store_overwrite_stages_new_content(tmp_path: Path) -> None:
    store = MemoryStore()
    store.ensure_bucket("bucket1")
    store.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v1"}))
    first = stage_model(store, tmp_path, URL)
    assert stage_model(store, tmp_path, URL) == first
    store.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v2"}))
    assert (stage_model(store, tmp_path, URL) / "weights").read_bytes() == b"v2"


def test_stage_model_overwritten_during_download_keyed_by_downloaded_bytes(store: CountingFileStore,
                                                                           tmp_path: Path) -> None:
    """The object changes between the HEAD and the GET: the directory must not be filed under the old
    version (a later stage of the old version would get the new bytes, or the reverse)."""
    models = tmp_path / "models"
    store.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v1"}))
    v1 = object_version(store, "bucket1", "job/output/model.tar.gz")
    original = store.get_to_file

    def racing_get(bucket: str, key: str, dest: Path) -> None:
        store.put_bytes(bucket, key, tar_gz({"weights": b"v2"}))
        original(bucket, key, dest)

    store.get_to_file = racing_get  # type: ignore[method-assign]
    staged = stage_model(store, models, URL)
    assert (staged / "weights").read_bytes() == b"v2"
    assert staged != staged_model_dir(models, URL, v1 or "")


def test_stage_model_store_without_head_keys_by_content(tmp_path: Path) -> None:
    """A store that cannot say the object's version: always downloaded, but never served stale."""
    class Opaque:
        def __init__(self) -> None:
            self.inner = MemoryStore()
            self.downloads = 0

        def get_to_file(self, bucket: str, key: str, dest: Path) -> None:
            self.downloads += 1
            self.inner.get_to_file(bucket, key, dest)

    store = Opaque()
    store.inner.ensure_bucket("bucket1")
    store.inner.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v1"}))
    first = stage_model(store, tmp_path, URL)  # type: ignore[arg-type]
    assert stage_model(store, tmp_path, URL) == first  # type: ignore[arg-type]
    store.inner.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v2"}))
    assert (stage_model(store, tmp_path, URL) / "weights").read_bytes() == b"v2"  # type: ignore[arg-type]
    assert store.downloads == 3


def test_stage_model_plain_object_and_missing_object(store: CountingFileStore, tmp_path: Path) -> None:
    store.put_bytes("bucket1", "models/model.pkl", b"pickle")
    staged = stage_model(store, tmp_path / "models", "s3://bucket1/models/model.pkl")
    assert (staged / "model.pkl").read_bytes() == b"pickle"
    with pytest.raises(ObjectNotFound):
        stage_model(store, tmp_path / "models", "s3://bucket1/models/missing.tar.gz")
    with pytest.raises(ObjectNotFound):
        stage_model(store, tmp_path / "models", "s3://nobucket/model.tar.gz")
    assert stage_model(store, tmp_path / "models", None).is_dir()


class _FakeS3Client:
    def __init__(self, etag: str, size: int) -> None:
        self.etag, self.size = etag, size

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:  # noqa: N803 - boto3's names
        from botocore.exceptions import ClientError

        if Key == "missing":
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"ETag": self.etag, "ContentLength": self.size}


def test_object_version_s3_uses_head_object_etag_and_size() -> None:
    store = S3Store(endpoint_url="http://127.0.0.1:1", access_key="a", secret_key="b", region="us-east-1")
    store._client = _FakeS3Client('"abc"', 10)  # noqa: SLF001 - no network in a unit test
    assert object_version(store, "b", "k") == 'etag:"abc":10'
    store._client = _FakeS3Client('"def"', 10)  # noqa: SLF001
    assert object_version(store, "b", "k") == 'etag:"def":10'
    with pytest.raises(ObjectNotFound):
        object_version(store, "b", "missing")


def test_staged_model_dir_https_and_s3_spellings_share_a_directory(tmp_path: Path) -> None:
    s3 = staged_model_dir(tmp_path, "s3://bucket1/job/model.tar.gz", "v1")
    assert staged_model_dir(tmp_path, "https://bucket1.s3.amazonaws.com/job/model.tar.gz", "v1") == s3
    assert staged_model_dir(tmp_path, "https://s3.us-east-1.amazonaws.com/bucket1/job/model.tar.gz", "v1") == s3


# ---------------------------------------------------------------------------------------------- removing unused


def _staged_versions(store: CountingFileStore, models: Path, url: str, key: str) -> tuple[Path, Path]:
    store.put_bytes("bucket1", key, tar_gz({"weights": b"v1"}))
    first = stage_model(store, models, url)
    store.put_bytes("bucket1", key, tar_gz({"weights": b"v2"}))
    return first, stage_model(store, models, url)


def test_remove_unused_deletes_only_idle_directories_nothing_names(store: CountingFileStore,
                                                                  tmp_path: Path) -> None:
    """Re-training to one output path leaves a directory per version: those no fleet names, no running transform
    stages from and not handed out for the idle time go, with their source files."""
    import os
    import time

    from opensage.serving.staging import remove_unused

    models = tmp_path / "models"
    old, new = _staged_versions(store, models, URL, "job/output/model.tar.gz")
    other_url = "s3://bucket1/other/model.tar.gz"
    other_old, other_new = _staged_versions(store, models, other_url, "other/model.tar.gz")
    empty = stage_model(store, models, None)
    # Recently handed out: nothing goes, whatever names it.
    assert remove_unused(models, in_use=set(), urls_in_use=set(), idle_seconds=60) == []
    an_hour_ago = time.time() - 3600
    for source in models.glob("*.source.json"):
        os.utime(source, (an_hour_ago, an_hour_ago))
    removed = remove_unused(models, in_use={new}, urls_in_use={other_url}, idle_seconds=60)
    assert removed == [old]
    assert not old.exists() and not Path(f"{old}.source.json").exists()
    assert (new / "weights").read_bytes() == b"v2"
    assert other_old.is_dir() and other_new.is_dir() and empty.is_dir()  # a running transform's URL: all kept
    assert sorted(p.name for p in models.iterdir() if p.name.startswith(".")) == [".lock"]  # no trash left
    # Handed out again (a cache hit) marks it used: kept for another idle time, then gone once unnamed.
    assert stage_model(store, models, other_url) == other_new
    assert remove_unused(models, in_use={new}, urls_in_use=set(), idle_seconds=60) == [other_old]
    assert other_new.is_dir()
    assert set(remove_unused(models, in_use=set(), urls_in_use=set(), idle_seconds=60, now=time.time() + 120)) == {
        new, other_new}
    assert empty.is_dir()
    # A removed version is staged again when asked for (one more download, same place).
    downloads = store.downloads
    assert (stage_model(store, models, URL) / "weights").read_bytes() == b"v2"
    assert store.downloads == downloads + 1


def test_remove_unused_waits_for_a_stager_handing_out_the_directory(store: CountingFileStore,
                                                                    tmp_path: Path) -> None:
    """The decision and the rename happen under the exclusive lock a cache hit takes shared: a directory being
    handed out (here: a process holding the shared lock) is not removed under it, and once handed out it is
    recently used, so it stays."""
    import fcntl
    import os
    import threading
    import time

    from opensage.serving.staging import remove_unused

    models = tmp_path / "models"
    store.put_bytes("bucket1", "job/output/model.tar.gz", tar_gz({"weights": b"v1"}))
    staged = stage_model(store, models, URL)
    old = time.time() - 3600
    os.utime(f"{staged}.source.json", (old, old))
    fd = os.open(models / ".lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # a stager between "exists" and "mark used"
    result: list[list[Path]] = []
    collector = threading.Thread(target=lambda: result.append(
        remove_unused(models, in_use=set(), urls_in_use=set(), idle_seconds=60)))
    collector.start()
    time.sleep(0.3)
    assert collector.is_alive() and staged.is_dir()  # waiting for the lock
    os.utime(f"{staged}.source.json")  # the stager marks it used, then lets go
    os.close(fd)
    collector.join(10)
    assert result == [[]] and (staged / "weights").read_bytes() == b"v1"


def test_remove_unused_handles_directories_without_source_file_by_their_mtime(tmp_path: Path) -> None:
    """Directories staged by a release that wrote no source file: judged by their own mtime."""
    import os
    import time

    from opensage.serving.staging import remove_unused

    models = tmp_path / "models"
    legacy = models / ("a" * 32)
    legacy.mkdir(parents=True)
    (legacy / "weights").write_bytes(b"x")
    fresh = models / ("b" * 32)
    fresh.mkdir()
    old = time.time() - 7200
    os.utime(legacy, (old, old))
    assert remove_unused(models, in_use=set(), urls_in_use={"s3://bucket1/x"}, idle_seconds=3600) == [legacy]
    assert fresh.is_dir() and not legacy.exists()
    assert remove_unused(tmp_path / "missing", in_use=set(), urls_in_use=set(), idle_seconds=0) == []
