"""Channel planning, RecordIO framing and Pipe feeders, in process against a file:// store."""

from __future__ import annotations

import gzip
import json
import struct
import threading
from pathlib import Path

import pytest

from opensage.objects import open_store
from opensage.runner.channels import (
    RECORDIO_MAGIC,
    ChannelError,
    PipeFeeder,
    download_channel,
    plan_channel,
    recordio_frames,
    shard,
)
from opensage.runner.jobspec import ChannelSpec, ObjectStoreSpec

BUCKET = "bkt"


@pytest.fixture()
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / BUCKET).mkdir(parents=True)
    return root


def put(root: Path, key: str, data: bytes | str) -> None:
    path = root / BUCKET / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def store_of(root: Path):  # type: ignore[no-untyped-def]
    return open_store(ObjectStoreSpec(f"file://{root}"))


def read_recordio(data: bytes) -> list[bytes]:
    """A dmlc RecordIO reader: parts of a split record are joined with the magic word."""
    records: list[bytes] = []
    pos = 0
    current = b""
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == RECORDIO_MAGIC
        flag, length = lrec >> 29, lrec & ((1 << 29) - 1)
        pos += 8
        part = data[pos:pos + length]
        pos += length + (-length % 4)
        current += part
        if flag in (0, 3):
            records.append(current)
            current = b""
        else:
            current += struct.pack("<I", RECORDIO_MAGIC)
    return records


def consume(feeder: PipeFeeder, epochs: int) -> list[bytes]:
    got: list[bytes] = []
    for epoch in range(epochs):
        path = feeder.fifo_path(epoch)
        for _ in range(500):
            if path.exists():
                break
            threading.Event().wait(0.01)
        with open(path, "rb") as fh:
            got.append(fh.read())
    return got


def test_shard_sharded_by_s3_key_takes_every_nth_from_host_index() -> None:
    items = list(range(7))
    assert shard(items, 1, 3, "ShardedByS3Key") == [1, 4]
    assert shard(items, 1, 3, "FullyReplicated") == items
    assert shard(items, 0, 1, "ShardedByS3Key") == items


def test_plan_prefix_without_slash_keeps_names_relative_to_prefix(store_root: Path) -> None:
    put(store_root, "d/train/a.csv", "a")
    put(store_root, "d/train.csv", "t")
    plan = plan_channel(store_of(store_root), ChannelSpec("c", f"s3://{BUCKET}/d/train"), 0, 1)
    assert sorted(r.rel for r in plan.objects) == ["a.csv", "train.csv"]


def test_plan_unknown_data_type_fails_naming_channel(store_root: Path) -> None:
    put(store_root, "x", "x")
    with pytest.raises(ChannelError, match="'c'.*S3DataType 'Bogus'"):
        plan_channel(store_of(store_root), ChannelSpec("c", f"s3://{BUCKET}/x", s3_data_type="Bogus"), 0, 1)


def test_plan_malformed_uri_fails_naming_channel(store_root: Path) -> None:
    with pytest.raises(ChannelError, match="channel 'train' has an invalid S3Uri"):
        plan_channel(store_of(store_root), ChannelSpec("train", "https://x/y"), 0, 1)


def test_recordio_frames_round_trip_with_magic_inside_payload() -> None:
    magic = struct.pack("<I", RECORDIO_MAGIC)
    payloads = [b"", b"abc", b"abcd" + magic + b"efgh" + magic, magic, b"xy" + magic + b"z"]
    stream = b"".join(b"".join(recordio_frames(p)) for p in payloads)
    assert len(stream) % 4 == 0
    assert read_recordio(stream) == payloads


def test_augmented_manifest_file_mode_keeps_this_hosts_lines(store_root: Path, tmp_path: Path) -> None:
    lines = [{"source": f"s{i}", "label": i} for i in range(5)]
    put(store_root, "am/train.manifest", "\n".join(json.dumps(x) for x in lines) + "\n")
    spec = ChannelSpec("train", f"s3://{BUCKET}/am/train.manifest", s3_data_type="AugmentedManifestFile",
                       attribute_names=["source", "label"], distribution="ShardedByS3Key")
    store = store_of(store_root)
    download_channel(store, plan_channel(store, spec, 1, 2), tmp_path / "data")
    written = (tmp_path / "data" / "train" / "train.manifest").read_text().splitlines()
    assert [json.loads(x)["source"] for x in written] == ["s1", "s3"]


def test_augmented_manifest_missing_attribute_fails_with_line_number(store_root: Path) -> None:
    put(store_root, "am/m", '{"source": "a"}\n{"other": 1}\n')
    spec = ChannelSpec("train", f"s3://{BUCKET}/am/m", s3_data_type="AugmentedManifestFile",
                       attribute_names=["source"])
    with pytest.raises(ChannelError, match="line 2 .*'train'.*'source'"):
        plan_channel(store_of(store_root), spec, 0, 1)


def test_pipe_augmented_manifest_streams_recordio_attribute_values(store_root: Path, tmp_path: Path) -> None:
    put(store_root, "img/1.jpg", b"\xff\xd8JPEG1")
    put(store_root, "am/m", json.dumps({"source-ref": f"s3://{BUCKET}/img/1.jpg", "class": 3}) + "\n"
        + json.dumps({"source-ref": f"s3://{BUCKET}/img/1.jpg", "class": "dog"}) + "\n")
    spec = ChannelSpec("train", f"s3://{BUCKET}/am/m", s3_data_type="AugmentedManifestFile",
                       attribute_names=["source-ref", "class"], input_mode="Pipe", record_wrapper="RecordIO")
    store = store_of(store_root)
    feeder = PipeFeeder(store, plan_channel(store, spec, 0, 1), tmp_path)
    feeder.prepare()
    feeder.start()
    try:
        (data,) = consume(feeder, 1)
    finally:
        feeder.stop()
    assert read_recordio(data) == [b"\xff\xd8JPEG1", b"3", b"\xff\xd8JPEG1", b"dog"]
    assert feeder.error is None


def test_pipe_shuffle_seed_changes_order_per_epoch_deterministically(store_root: Path, tmp_path: Path) -> None:
    for i in range(8):
        put(store_root, f"p/{i}", str(i))
    spec = ChannelSpec("train", f"s3://{BUCKET}/p/", input_mode="Pipe", shuffle_seed=7)
    store = store_of(store_root)
    orders = []
    for run in range(2):
        feeder = PipeFeeder(store, plan_channel(store, spec, 0, 1), tmp_path / f"run{run}")
        feeder.prepare()
        feeder.start()
        try:
            orders.append(consume(feeder, 3))
        finally:
            feeder.stop()
    assert orders[0] == orders[1]
    assert len(set(orders[0])) > 1
    assert all(sorted(epoch.decode()) == [str(i) for i in range(8)] for epoch in orders[0])


def test_pipe_gzip_recordio_wraps_each_decompressed_object(store_root: Path, tmp_path: Path) -> None:
    put(store_root, "g/a.gz", gzip.compress(b"first"))
    put(store_root, "g/b.gz", gzip.compress(b"second!"))
    spec = ChannelSpec("train", f"s3://{BUCKET}/g/", input_mode="Pipe", compression="Gzip",
                       record_wrapper="RecordIO")
    store = store_of(store_root)
    feeder = PipeFeeder(store, plan_channel(store, spec, 0, 1), tmp_path)
    feeder.prepare()
    feeder.start()
    try:
        (data,) = consume(feeder, 1)
    finally:
        feeder.stop()
    assert read_recordio(data) == [b"first", b"second!"]
