"""One contract, every store: MemoryStore, FileStore and S3Store against a real SeaweedFS."""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from opensage.objects import ObjectInfo, ObjectNotFound, ObjectStore, open_store
from opensage.objects import s3 as s3_module
from opensage.objects.file import FileStore
from opensage.objects.memory import MemoryStore
from opensage.objects.s3 import S3Store
from opensage.objects.seaweed import SeaweedServer
from opensage.runner.jobspec import ObjectStoreSpec

_bucket_numbers = itertools.count()


@pytest.fixture(params=["memory", "file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "file":
        return FileStore(tmp_path / "root")
    server: SeaweedServer = request.getfixturevalue("seaweed")
    return S3Store(server.endpoint_url, server.access_key, server.secret_key)


@pytest.fixture
def bucket(store: ObjectStore) -> str:
    name = f"contract-{os.getpid()}-{next(_bucket_numbers)}"
    store.ensure_bucket(name)
    return name


def multipart_from_5_mib(monkeypatch: pytest.MonkeyPatch) -> None:
    """S3 multipart (5 MiB is S3's minimum part size) without huge test files."""
    monkeypatch.setattr(s3_module, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(s3_module, "MULTIPART_CHUNKSIZE", 5 * 1024 * 1024)


def test_put_bytes_then_get_bytes_roundtrips(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "dir/obj.bin", b"\x00\x01hello")
    assert store.get_bytes(bucket, "dir/obj.bin") == b"\x00\x01hello"


def test_put_bytes_existing_key_overwrites(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "k", b"first version")
    store.put_bytes(bucket, "k", b"second")
    assert store.get_bytes(bucket, "k") == b"second"
    assert list(store.list(bucket, "k")) == [ObjectInfo("k", 6)]


def test_put_bytes_empty_object_is_listed_with_size_zero(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "empty", b"")
    assert store.get_bytes(bucket, "empty") == b""
    assert list(store.list(bucket, "")) == [ObjectInfo("empty", 0)]


def test_list_prefix_returns_matches_in_s3_key_order(store: ObjectStore, bucket: str) -> None:
    keys = ["a/b/c", "a/b0", "a/b-", "a/B", "a/\u00e9", "a/b/d/e", "b/x", "ab"]
    for key in reversed(keys):
        store.put_bytes(bucket, key, key.encode())
    # S3 order is UTF-8 byte order: '-' < '/' < '0' < 'B' < 'b' < 'é'.
    assert [o.key for o in store.list(bucket, "a/")] == ["a/B", "a/b-", "a/b/c", "a/b/d/e", "a/b0", "a/\u00e9"]
    assert [o.key for o in store.list(bucket, "a/b")] == ["a/b-", "a/b/c", "a/b/d/e", "a/b0"]
    assert [o.key for o in store.list(bucket, "")] == sorted(keys, key=lambda k: k.encode())
    assert [(o.key, o.size) for o in store.list(bucket, "a/b/d/")] == [("a/b/d/e", 7)]


def test_list_prefix_without_matches_is_empty(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "data/x.csv", b"1")
    assert list(store.list(bucket, "dat/")) == []
    assert list(store.list(bucket, "nothing")) == []


def test_list_more_than_one_page_returns_every_key(store: ObjectStore, bucket: str) -> None:
    keys = [f"many/{i:05d}" for i in range(1005)]  # S3 pages hold 1000 keys
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put_bytes(bucket, k, b"x"), keys))
    assert [o.key for o in store.list(bucket, "many/")] == keys


def test_list_missing_bucket_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        list(store.list("no-such-bucket-opensage", ""))


def test_get_bytes_missing_key_raises_object_not_found(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFound, match="missing/key"):
        store.get_bytes(bucket, "missing/key")


def test_get_bytes_missing_bucket_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get_bytes("no-such-bucket-opensage", "k")


def test_open_read_streams_object_in_chunks(store: ObjectStore, bucket: str) -> None:
    data = os.urandom(300_000)
    store.put_bytes(bucket, "stream", data)
    stream = store.open_read(bucket, "stream")
    try:
        chunks = []
        while chunk := stream.read(65536):
            chunks.append(chunk)
    finally:
        stream.close()
    assert b"".join(chunks) == data
    assert len(chunks) >= 2


def test_open_read_missing_key_raises_object_not_found(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFound):
        store.open_read(bucket, "absent")


def test_get_to_file_creates_parents_and_writes_content(
    store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    store.put_bytes(bucket, "train/part-0.csv", b"1,2,3\n")
    dest = tmp_path / "dl" / "deep" / "part-0.csv"
    store.get_to_file(bucket, "train/part-0.csv", dest)
    assert dest.read_bytes() == b"1,2,3\n"


def test_get_to_file_missing_key_raises_and_leaves_no_file(
    store: ObjectStore, bucket: str, tmp_path: Path
) -> None:
    dest = tmp_path / "dl" / "x"
    with pytest.raises(ObjectNotFound):
        store.get_to_file(bucket, "absent", dest)
    assert not dest.exists()


def test_put_file_large_multipart_roundtrips_through_get_to_file(
    store: ObjectStore, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    multipart_from_5_mib(monkeypatch)
    src = tmp_path / "big.bin"
    data = os.urandom(12 * 1024 * 1024 + 123)
    src.write_bytes(data)
    store.put_file(bucket, "model/model.tar.gz", src)
    assert list(store.list(bucket, "model/")) == [ObjectInfo("model/model.tar.gz", len(data))]
    dest = tmp_path / "back.bin"
    store.get_to_file(bucket, "model/model.tar.gz", dest)
    assert dest.read_bytes() == data


def test_put_bytes_missing_bucket_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="ensure_bucket"):
        store.put_bytes("no-such-bucket-opensage", "k", b"x")


def test_put_file_missing_bucket_raises_object_not_found(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(ObjectNotFound):
        store.put_file("no-such-bucket-opensage", "k", src)


def test_exists_reports_presence(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "here", b"1")
    assert store.exists(bucket, "here")
    assert not store.exists(bucket, "not-here")
    assert not store.exists(bucket, "her")
    assert not store.exists("no-such-bucket-opensage", "here")


def test_ensure_bucket_twice_keeps_objects(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "k", b"v")
    store.ensure_bucket(bucket)
    assert store.get_bytes(bucket, "k") == b"v"


# -- open_store ----------------------------------------------------------------------------------------


def test_open_store_file_url_roots_buckets_at_directory(tmp_path: Path) -> None:
    store = open_store(ObjectStoreSpec(endpoint_url=f"file://{tmp_path}"))
    assert isinstance(store, FileStore)
    store.ensure_bucket("my-bucket")
    store.put_bytes("my-bucket", "a/b.txt", b"hi")
    assert (tmp_path / "my-bucket" / "a" / "b.txt").read_bytes() == b"hi"


def test_open_store_memory_url_is_shared_process_wide() -> None:
    first = open_store(ObjectStoreSpec(endpoint_url="memory://"))
    first.ensure_bucket("shared-bucket")
    first.put_bytes("shared-bucket", "k", b"v")
    again = open_store(ObjectStoreSpec(endpoint_url="memory://"))
    assert again.get_bytes("shared-bucket", "k") == b"v"
    assert open_store(ObjectStoreSpec(endpoint_url="memory://other")) is not again


def test_open_store_http_url_builds_s3_store_without_network() -> None:
    store = open_store(ObjectStoreSpec("http://127.0.0.1:1", "AK", "SK", region="eu-west-1"))
    assert isinstance(store, S3Store)
    assert store.endpoint_url == "http://127.0.0.1:1"
    assert store.region == "eu-west-1"


def test_open_store_s3_store_uses_path_style_addressing() -> None:
    store = open_store(ObjectStoreSpec("http://127.0.0.1:1", "AK", "SK"))
    assert isinstance(store, S3Store)
    url = store.client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "k"})
    assert url.startswith("http://127.0.0.1:1/bkt/k?")


# -- FileStore specifics -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "a//b", "dir/", "", "./a"])
def test_file_store_unsafe_key_raises_value_error(tmp_path: Path, key: str) -> None:
    store = FileStore(tmp_path)
    store.ensure_bucket("bkt")
    with pytest.raises(ValueError, match="key"):
        store.put_bytes("bkt", key, b"x")
    assert not (tmp_path.parent / "escape").exists()


def test_file_store_key_that_is_also_a_prefix_raises_value_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.ensure_bucket("bkt")
    store.put_bytes("bkt", "a/b", b"x")
    with pytest.raises(ValueError, match="prefix"):
        store.put_bytes("bkt", "a", b"y")
    assert store.get_bytes("bkt", "a/b") == b"x"


def test_file_store_temporary_files_are_never_listed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.ensure_bucket("bkt")
    store.put_bytes("bkt", "k", b"x")
    (tmp_path / ".opensage-tmp" / "leftover").write_bytes(b"partial")
    assert [o.key for o in store.list("bkt", "")] == ["k"]


def test_version_changes_when_the_object_is_overwritten(store: ObjectStore, bucket: str) -> None:
    store.put_bytes(bucket, "model.tar.gz", b"first")
    first = store.version(bucket, "model.tar.gz")
    assert store.version(bucket, "model.tar.gz") == first
    store.put_bytes(bucket, "model.tar.gz", b"other")  # same size, new content
    assert store.version(bucket, "model.tar.gz") != first
    with pytest.raises(ObjectNotFound):
        store.version(bucket, "missing")


def test_open_range_returns_exactly_the_requested_bytes(store: ObjectStore, bucket: str) -> None:
    data = bytes(range(256)) * 40
    store.put_bytes(bucket, "r/obj", data)
    assert store.size(bucket, "r/obj") == len(data)
    for start, end in [(0, 1), (5, 300), (len(data) - 7, len(data)), (100, 100)]:
        body = store.open_range(bucket, "r/obj", start, end)
        try:
            assert body.read() == data[start:end]
        finally:
            body.close()


def test_open_range_missing_key_raises_object_not_found(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(ObjectNotFound):
        store.open_range(bucket, "nope", 0, 10)
    with pytest.raises(ObjectNotFound):
        store.size(bucket, "nope")


# -- S3Store.get_to_file: one GET for a small object --------------------------------------------------
def _s3_store(seaweed: SeaweedServer) -> tuple[S3Store, str, list[str]]:
    store = S3Store(seaweed.endpoint_url, seaweed.access_key, seaweed.secret_key)
    name = f"getfile-{os.getpid()}-{next(_bucket_numbers)}"
    store.ensure_bucket(name)
    calls: list[str] = []
    store.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return store, name, calls


def test_s3_get_to_file_small_object_is_one_get_and_a_large_one_goes_by_parts(
    seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The managed download costs a HEAD, a transfer manager and its threads per object: 22 ms vs 9 ms here.
    multipart_from_5_mib(monkeypatch)
    store, bucket, calls = _s3_store(seaweed)
    small, large = os.urandom(3 * 1024 * 1024 + 5), os.urandom(11 * 1024 * 1024 + 3)
    store.put_bytes(bucket, "small", small)
    store.put_bytes(bucket, "large", large)
    calls.clear()
    store.get_to_file(bucket, "small", tmp_path / "small")
    assert calls == ["GetObject"] and (tmp_path / "small").read_bytes() == small
    calls.clear()
    store.get_to_file(bucket, "large", tmp_path / "large")
    assert (tmp_path / "large").read_bytes() == large
    assert calls[0] == "GetObject" and "HeadObject" in calls and calls.count("GetObject") >= 3  # then by parts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large", "small"]  # no temporary left


def test_s3_get_to_file_body_cut_short_falls_back_to_the_managed_download(
    seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ResponseStreamingError
    from botocore.response import StreamingBody

    store, bucket, calls = _s3_store(seaweed)
    data = os.urandom(2 * 1024 * 1024)
    store.put_bytes(bucket, "cut", data)
    real = StreamingBody.iter_chunks
    cuts = [1]

    def cut_once(self: StreamingBody, chunk_size: int = 1024):  # noqa: ANN202
        for i, chunk in enumerate(real(self, chunk_size)):
            if i == 1 and cuts:
                cuts.pop()
                raise ResponseStreamingError(error="connection reset mid-body")
            yield chunk

    monkeypatch.setattr(StreamingBody, "iter_chunks", cut_once)
    calls.clear()
    store.get_to_file(bucket, "cut", tmp_path / "cut")
    assert not cuts and (tmp_path / "cut").read_bytes() == data
    assert calls[:2] == ["GetObject", "HeadObject"]  # the managed download took over
    assert [p.name for p in tmp_path.iterdir()] == ["cut"]


def test_s3_put_file_small_is_one_put_object_and_a_large_one_goes_multipart(
    seaweed: SeaweedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    multipart_from_5_mib(monkeypatch)
    store, bucket, calls = _s3_store(seaweed)
    small, large = tmp_path / "small", tmp_path / "large"
    small.write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    large.write_bytes(os.urandom(11 * 1024 * 1024 + 2))
    calls.clear()
    store.put_file(bucket, "out/small", small)
    assert calls == ["PutObject"]
    calls.clear()
    store.put_file(bucket, "out/large", large)
    assert calls[0] == "CreateMultipartUpload" and calls.count("UploadPart") == 3
    assert store.get_bytes(bucket, "out/small") == small.read_bytes()
    assert store.get_bytes(bucket, "out/large") == large.read_bytes()
