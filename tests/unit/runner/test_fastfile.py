"""FastFile channels read while they download (runner.fastfile): same bytes, failures surfaced to reader
and job."""

from __future__ import annotations

import gzip
import io
import sys
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from opensage.objects.memory import MemoryStore
from opensage.runner import channels, fastfile
from opensage.runner.channels import ChannelError
from opensage.runner.jobspec import ChannelSpec


class _Slow(io.RawIOBase):
    """An object body that arrives in small pieces, slowly, optionally breaking after ``fail_after`` bytes."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self.data, self.pos, self.fail_after = data, 0, fail_after

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise ConnectionResetError("connection reset by the object store")
        time.sleep(0.002)
        piece = self.data[self.pos:self.pos + min(n if n > 0 else 1 << 30, 50_000)]
        self.pos += len(piece)
        return piece


class _SlowStore(MemoryStore):
    fail_after: int | None = None

    def open_read(self, bucket: str, key: str):
        return _Slow(self.get_bytes(bucket, key), self.fail_after)


def _csv_bytes(rows: int = 20_000) -> bytes:
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(size=(rows, 6)), 4)
    return "".join(",".join(str(v) for v in row) + "\n" for row in x).encode()


def _setup(tmp_path, objects: dict[str, bytes], store_cls=_SlowStore, mode: str = "FastFile", **spec_kw):
    store = store_cls()
    store.ensure_bucket("b")
    for key, body in objects.items():
        store.put_bytes("b", key, body)
    spec = ChannelSpec(name="train", s3_uri="s3://b/train/", input_mode=mode, **spec_kw)
    data_dir = tmp_path / "input" / "data"
    return store, spec, data_dir


def test_prepare_channels_fastfile_streamed_reader_gets_identical_bytes_while_downloading(tmp_path):
    a, b = _csv_bytes(), _csv_bytes(3000)
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": a, "train/sub/b.csv": b})
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    assert [type(f).__name__ for f in feeders] == ["StreamedChannel"]
    # Every file is there (empty) before the download starts: the algorithm lists the channel at once.
    assert sorted(p.name for p in (data_dir / "train").rglob("*") if p.is_file()) == ["a.csv", "b.csv"]
    feeders[0].start()
    with fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train") as stream:
        first = stream.read(100)
        assert not (data_dir / fastfile.MARKERS / "train" / "a.csv.done").exists()  # read before it finished
        got_a = first + stream.read()
    got_b = fastfile.follow(data_dir / "train" / "sub" / "b.csv", data_dir, "train").read()
    assert (got_a, got_b) == (a, b)
    feeders[0].join(5)
    assert feeders[0].error is None
    # pyarrow's CSV reader consuming the stream sees the same table as the finished file.
    names = [f"c{i}" for i in range(6)]
    opts = dict(read_options=pacsv.ReadOptions(column_names=names),
                convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())))
    streamed = pacsv.read_csv(pa.input_stream(fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train")),
                              **opts)
    assert streamed.equals(pacsv.read_csv(data_dir / "train" / "a.csv", **opts))


def test_prepare_channels_fastfile_failed_download_fails_reader_and_job_with_reason(tmp_path):
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": _csv_bytes()})
    store.fail_after = 200_000
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    with pytest.raises(ChannelError, match=r"ClientError: Could not download s3://b/train/a.csv for channel "
                                           r"'train': the object store did not answer"):
        fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train").read()
    feeders[0].join(5)
    assert feeders[0].error and "s3://b/train/a.csv" in feeders[0].error  # the agent's FailureReason


def test_prepare_channels_fastfile_gzip_object_streams_decompressed(tmp_path):
    body = _csv_bytes(2000)
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv.gz": gzip.compress(body)}, compression="Gzip")
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    assert fastfile.follow(data_dir / "train" / "a.csv.gz", data_dir, "train").read() == body


def test_prepare_channels_without_stream_flag_downloads_fastfile_before_start(tmp_path):
    body = _csv_bytes(500)
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": body}, store_cls=MemoryStore)
    assert channels.prepare_channels(store, [spec], data_dir, 0, 1) == []
    assert (data_dir / "train" / "a.csv").read_bytes() == body
    with fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train") as plain:  # not streamed: a file
        assert plain.read() == body


def test_prepare_channels_file_mode_sequential_channels_streamed_for_builtins_only(tmp_path):
    body = _csv_bytes(500)
    store, _, data_dir = _setup(tmp_path, {"train/a.csv": body, "test/b.csv": body,
                                           "auxiliary/vocab.txt": b"a\nb\n"}, store_cls=MemoryStore)
    specs = [ChannelSpec(name=n, s3_uri=f"s3://b/{n}/", input_mode="File") for n in ("train", "test", "auxiliary")]
    # A built-in (stream_fastfile): 'train' and 'test' are read through content.py, so they stream; 'auxiliary'
    # (NTM opens vocab.txt as a file) is on disk before the algorithm starts, as File mode promises.
    feeders = channels.prepare_channels(store, specs, data_dir, 0, 1, stream_fastfile=True)
    assert [f.plan.channel.name for f in feeders] == ["train", "test"]
    assert (data_dir / "auxiliary" / "vocab.txt").read_bytes() == b"a\nb\n"
    feeders[0].start()
    assert fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train").read() == body
    # A user's script: File mode is never streamed.
    plain = tmp_path / "plain"
    assert channels.prepare_channels(store, specs, plain, 0, 1) == []
    assert (plain / "train" / "a.csv").read_bytes() == body


def test_streamed_channel_downloads_in_reading_order_not_key_order(tmp_path):
    from tests.streaming import GatedStore

    store = GatedStore()
    store.ensure_bucket("b")
    for key in ("train/a/x/1.csv", "train/a/2.csv", "train/b.csv", "train/a-b.csv"):
        store.put_bytes("b", key, _csv_bytes(100))
    spec = ChannelSpec(name="train", s3_uri="s3://b/train/", input_mode="FastFile")
    data_dir = tmp_path / "input" / "data"
    monkey_ranges = fastfile.RANGES
    try:
        fastfile.RANGES = 1  # one download at a time: the order they start in is the order asked
        (feeder,) = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
        feeder.start()
        feeder.join(10)
    finally:
        fastfile.RANGES = monkey_ranges
    from opensage.algorithms.content import list_files

    reading = ["train/" + p.relative_to(data_dir / "train").as_posix() for p in list_files(data_dir / "train")]
    assert store.opened == reading == ["train/a-b.csv", "train/b.csv", "train/a/2.csv", "train/a/x/1.csv"]


def test_streamed_channel_stop_ends_download_thread(tmp_path):
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": _csv_bytes(200_000)})
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    time.sleep(0.05)
    feeders[0].stop()
    feeders[0].join(5)
    assert not feeders[0].is_alive()


def test_xgboost_load_channels_streamed_fastfile_reads_all_rows(tmp_path):
    from opensage.algorithms.content import MlPaths
    from opensage.algorithms.xgboost.train import load_channels

    rng = np.random.default_rng(3)
    rows = np.round(rng.normal(size=(5000, 4)), 4)
    rows[:, 0] = rows[:, 0] > 0
    body = "".join(",".join(str(v) for v in row) + "\n" for row in rows).encode()
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": body})
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    paths = MlPaths(tmp_path)
    train, _ = load_channels(paths, {"train": {"ContentType": "text/csv", "TrainingInputMode": "FastFile"}},
                             csv_weights=False, arrow=False)
    assert train.num_rows == 5000
    np.testing.assert_allclose(train.labels, rows[:, 0].astype(np.float32))


def test_xgboost_load_channels_streamed_download_paused_midway_parses_first_part(tmp_path):
    import os
    import threading

    from opensage.algorithms.content import MlPaths
    from opensage.algorithms.xgboost.train import load_channels
    from tests.streaming import GatedStore, reader_position, wait_for

    body = _csv_bytes(30_000)
    store = GatedStore(pause_at=len(body) // 2)
    store.ensure_bucket("b")
    store.put_bytes("b", "train/a.csv", body)
    spec = ChannelSpec(name="train", s3_uri="s3://b/train/", input_mode="File")
    data_dir = tmp_path / "input" / "data"
    (feeder,) = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeder.start()
    got: dict[str, object] = {}
    reader = threading.Thread(target=lambda: got.update(train=load_channels(
        MlPaths(tmp_path), {"train": {"ContentType": "text/csv", "TrainingInputMode": "File"}}, csv_weights=False,
        arrow=False)[0]), daemon=True)
    reader.start()
    # Not waiting for the whole channel: the first half is read while the second is held back.
    wait_for(lambda: reader_position(os.getpid(), data_dir / "train" / "a.csv") >= len(body) // 4,
             what="load_channels to read the first part")
    assert reader.is_alive()
    store.release.set()
    reader.join(60)
    assert got["train"].num_rows == 30_000


def test_xgboost_load_channels_streamed_fastfile_failed_download_is_data_error_with_reason(tmp_path):
    from opensage.algorithms.content import DataError, MlPaths
    from opensage.algorithms.xgboost.train import load_channels

    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": _csv_bytes()})
    store.fail_after = 100_000
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    with pytest.raises(DataError, match="ClientError: Could not download s3://b/train/a.csv"):
        load_channels(MlPaths(tmp_path), {"train": {"ContentType": "text/csv", "TrainingInputMode": "FastFile"}},
                      csv_weights=False)
    feeders[0].join(5)
    assert "s3://b/train/a.csv" in feeders[0].error


class _RangeStore(MemoryStore):
    """Counts ranged GETs; one range can break after ``fail_after`` bytes."""

    fail_after: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.ranges: list[tuple[int, int]] = []

    def open_range(self, bucket: str, key: str, start: int, end: int):
        self.ranges.append((start, end))
        fail = self.fail_after if start > 0 else None  # the first range succeeds, a later one breaks
        return _Slow(self.get_bytes(bucket, key)[start:end], fail)


def test_streamed_channel_large_object_filled_by_parallel_ranges_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
    body = _csv_bytes(20_000)
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": body}, store_cls=_RangeStore)
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    monkeypatch.setattr(fastfile, "UPTO_STEP", 4096)
    feeders[0].start()
    # follow() reads a file filled by ranges up to its complete prefix (holes read as zeros), before it is done.
    with fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train") as stream:
        first = stream.read(100)
        assert not (data_dir / fastfile.MARKERS / "train" / "a.csv.done").exists()  # read before it finished
        got = first + stream.read()
    feeders[0].join(5)
    assert feeders[0].error is None and got == body
    fastfile.wait_complete(data_dir, "train")
    assert (data_dir / "train" / "a.csv").read_bytes() == body
    starts = sorted(s for s, _ in store.ranges)
    assert len(starts) == fastfile.RANGES and starts[0] == 0
    assert sum(e - s for s, e in store.ranges) == len(body)


def test_streamed_channel_large_object_fetched_as_ordered_parts_of_at_most_part_size(tmp_path, monkeypatch):
    # Parts, not RANGES equal ranges: the complete prefix the reader may read then grows at the pace of the
    # whole download instead of one range's (the reader waited for nearly everything before its second eighth).
    monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
    monkeypatch.setattr(fastfile, "PART", 8192)
    body = _csv_bytes(5000)
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": body}, store_cls=_RangeStore)
    (feeder,) = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeder.start()
    assert fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train").read() == body
    feeder.join(5)
    parts = sorted(store.ranges)
    assert parts == [(start, min(len(body), start + 8192)) for start in range(0, len(body), 8192)]
    assert len(parts) > fastfile.RANGES


def test_streamed_channel_failed_range_fails_reader_and_job_with_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": _csv_bytes(20_000)}, store_cls=_RangeStore)
    store.fail_after = 1000
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    with pytest.raises(ChannelError, match=r"ClientError: Could not download s3://b/train/a.csv for channel "
                                           r"'train'"):
        fastfile.follow(data_dir / "train" / "a.csv", data_dir, "train").read()
    feeders[0].join(5)
    assert feeders[0].error and "s3://b/train/a.csv" in feeders[0].error
    with pytest.raises(ChannelError):
        fastfile.wait_complete(data_dir, "train")


def _libsvm_bytes(rows: int = 3000) -> bytes:
    rng = np.random.default_rng(3)
    return "".join(f"{rng.integers(0, 2)} 1:{rng.normal():.4f} 4:{rng.normal():.4f}\n"
                   for _ in range(rows)).encode()


@pytest.mark.parametrize("ranged", [False, True])
@pytest.mark.parametrize(("content_type", "make"), [("text/csv", _csv_bytes), ("text/libsvm", _libsvm_bytes)])
def test_read_channel_streamed_fastfile_parses_while_downloading_identical_data(tmp_path, monkeypatch, ranged,
                                                                                  content_type, make):
    from opensage.algorithms.content import read_channel

    if ranged:
        monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
        monkeypatch.setattr(fastfile, "UPTO_STEP", 4096)
    objects = {"train/a.csv": make(), "train/empty.csv": b"", "train/sub/b.csv": make(500)}
    store, spec, data_dir = _setup(tmp_path, objects, store_cls=_RangeStore)
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    streamed = read_channel("train", data_dir=data_dir, content_type=content_type, input_mode="FastFile")
    feeders[0].join(5)
    assert feeders[0].error is None
    # The same channel downloaded whole (File mode) reads as the same rows.
    plain_dir = tmp_path / "plain" / "input" / "data"
    channels.prepare_channels(store, [spec], plain_dir, 0, 1)
    whole = read_channel("train", data_dir=plain_dir, content_type=content_type, input_mode="File")
    dense = (lambda m: m.toarray()) if content_type == "text/libsvm" else np.asarray
    assert np.array_equal(dense(streamed.features), dense(whole.features))
    assert np.array_equal(streamed.labels, whole.labels)
    assert streamed.num_rows == whole.num_rows == (3500 if make is _libsvm_bytes else 20_500)


def test_read_channel_streamed_fastfile_failed_download_is_data_error_with_reason(tmp_path):
    from opensage.algorithms.content import DataError, read_channel

    store, spec, data_dir = _setup(tmp_path, {"train/a.csv": _csv_bytes()})
    store.fail_after = 200_000
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeders[0].start()
    with pytest.raises(DataError, match=r"ClientError: Could not download s3://b/train/a.csv for channel 'train'"):
        read_channel("train", data_dir=data_dir, content_type="text/csv", input_mode="FastFile")
    feeders[0].join(5)


def test_agent_builtin_exits_zero_before_streamed_file_mode_download_fails_job_fails_with_reason(tmp_path,
                                                                                                  monkeypatch):
    """File mode promises the whole channel: a built-in that streamed it and exited 0 without reading it all
    (files it skips, the idle host of a replicated channel) still fails when the rest never arrives."""
    from opensage.runner import agent as agent_mod
    from opensage.runner import sandbox
    from opensage.runner.jobspec import JobSpec, ObjectStoreSpec
    from tests.streaming import GatedStore

    store = GatedStore(pause_at=1000, fail=True)
    store.ensure_bucket("b")
    store.put_bytes("b", "train/a.csv", _csv_bytes(2000))
    monkeypatch.setattr("opensage.objects.open_store", lambda spec: store)
    jobdir = tmp_path / "job"
    JobSpec(job_name="j", job_arn="arn:aws:sagemaker:us-east-1:000000000000:training-job/j", kind="training",
            # a built-in's command (streams its channels) that exits 0 without reading anything
            command=[sys.executable, "-m", "opensage.algorithms.hosts"], environment={},
            channels=[ChannelSpec(name="train", s3_uri="s3://b/train/", input_mode="File")],
            object_store=ObjectStoreSpec("memory://"), model_s3_uri="s3://b/out/model.tar.gz",
            output_s3_uri="s3://b/out/output.tar.gz").write(jobdir)
    agent = agent_mod.Agent(jobdir, sandbox.Control(None))
    started = threading.Timer(0.5, store.release.set)  # the download breaks after the algorithm has exited
    started.start()
    result = agent.run()
    started.cancel()
    assert result.exit_code != 0
    assert "Could not download s3://b/train/a.csv for channel 'train'" in (result.failure_reason or "")


class _SizeCountingStore(_RangeStore):
    def __init__(self) -> None:
        super().__init__()
        self.heads = 0

    def size(self, bucket: str, key: str) -> int:
        self.heads += 1
        return super().size(bucket, key)


def test_streamed_channel_takes_sizes_from_the_listing_not_a_request_per_object(tmp_path, monkeypatch):
    # Each HEAD is a round trip through the S3 proxy (~8 ms) before the job starts; the listing has the sizes.
    monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
    objects = {f"train/part-{i:03d}.csv": _csv_bytes(300 + i) for i in range(40)}
    store, spec, data_dir = _setup(tmp_path, objects, store_cls=_SizeCountingStore)
    (feeder,) = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    feeder.start()
    for key, body in objects.items():
        rel = key.removeprefix("train/")
        assert fastfile.follow(data_dir / "train" / rel, data_dir, "train").read() == body
    feeder.join(5)
    assert feeder.error is None and store.heads == 0
    assert len(store.ranges) >= 40  # every object was large enough to go by ranges, sized without a HEAD
