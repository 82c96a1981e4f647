"""Built-in algorithms read a streamed channel (runner.fastfile) while it downloads, through content.py: the
same rows as the downloaded file, parsed as the bytes arrive, and a download that breaks fails the read with
the download's reason."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opensage.algorithms import content, recordio
from opensage.algorithms.content import DataError, MlPaths, read_channel
from opensage.runner import channels, fastfile
from opensage.runner.jobspec import ChannelSpec
from tests.streaming import GatedStore, reader_position, wait_for


def _rows(n: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = np.round(rng.normal(size=(n, 6)), 4)
    rows[:, 0] = rows[:, 0] > 0
    return rows


def _csv(rows: np.ndarray) -> bytes:
    return "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in rows).encode()


def _libsvm(rows: np.ndarray) -> bytes:
    return "".join(f"{int(r[0])} " + " ".join(f"{j}:{v:.4f}" for j, v in enumerate(r[1:]) if j % 2 == 0) + "\n"
                   for r in rows).encode()


def _parquet(rows: np.ndarray) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table({f"c{j}": rows[:, j].astype(np.float32) for j in range(rows.shape[1])}), out)
    return out.getvalue()


def _recordio(rows: np.ndarray) -> bytes:
    return recordio.encode_dense(rows[:, 1:].astype(np.float32), rows[:, 0].astype(np.float32))


def _channel(tmp_path, store, objects: dict[str, bytes], mode: str = "FastFile", name: str = "train"):
    store.ensure_bucket("b")
    for key, body in objects.items():
        store.put_bytes("b", key, body)
    data_dir = MlPaths(tmp_path / "ml").data
    spec = ChannelSpec(name=name, s3_uri=f"s3://b/{name}/", input_mode=mode)
    feeders = channels.prepare_channels(store, [spec], data_dir, 0, 1, stream_fastfile=True)
    assert [type(f).__name__ for f in feeders] == ["StreamedChannel"]
    return data_dir, spec, feeders[0]


def _downloaded(tmp_path, store, spec) -> MlPaths:
    """The same channel downloaded whole before reading (what File mode did)."""
    plain = tmp_path / "plain" / "input" / "data"
    assert channels.prepare_channels(store, [spec], plain, 0, 1) == []
    return plain


def _same(a, b) -> None:
    dense = (lambda m: m.toarray()) if hasattr(a.features, "toarray") else np.asarray
    assert np.array_equal(dense(a.dense_or_sparse()), dense(b.dense_or_sparse()))
    assert np.array_equal(a.labels, b.labels)


def _read_in_thread(data_dir, content_type: str, mode: str):
    result: dict[str, object] = {}

    def read() -> None:
        try:
            result["data"] = read_channel("train", data_dir=data_dir, content_type=content_type, input_mode=mode)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, result


def _read_while_held(data_dir, store, feeder, name: str, size: int, content_type: str, mode: str = "FastFile"):
    """Read channel 'train' in a thread while the download of ``name`` (``size`` bytes) is held at its middle:
    the reader consumes the first quarter before the rest arrives (the file not done yet); then let the download
    go on and wait for both. The reader's result (``data`` or ``error``)."""
    thread, result = _read_in_thread(data_dir, content_type, mode)
    store.paused.wait(60)
    wait_for(lambda: reader_position(os.getpid(), data_dir / "train" / name) >= size // 4,
             what="the reader to consume the first part")
    assert not (data_dir / fastfile.MARKERS / "train" / f"{name}.done").exists() and thread.is_alive()
    store.release.set()
    thread.join(60)
    feeder.join(10)
    return result


@pytest.mark.parametrize("ranged", [False, True])
@pytest.mark.parametrize("mode", ["FastFile", "File"])
def test_read_channel_streamed_csv_download_paused_midway_first_part_consumed_same_rows(tmp_path, monkeypatch,
                                                                                       ranged, mode):
    if ranged:
        monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
        monkeypatch.setattr(fastfile, "UPTO_STEP", 4096)
    body = _csv(_rows(30_000))
    store = GatedStore(pause_at=len(body) // 2)
    data_dir, spec, feeder = _channel(tmp_path, store, {"train/a.csv": body}, mode)
    feeder.start()
    # The download is held at its middle: the reader has consumed what arrived, not waited for the rest.
    result = _read_while_held(data_dir, store, feeder, "a.csv", len(body), "text/csv", mode)
    assert feeder.error is None and "error" not in result
    whole = read_channel("train", data_dir=_downloaded(tmp_path, store, spec), content_type="text/csv")
    _same(result["data"], whole)
    assert whole.num_rows == 30_000


def test_read_channel_streamed_files_read_in_order_second_consumed_while_downloading(tmp_path):
    # Key order (a/... before b.csv) is not the reading order (a directory's files first): the download follows
    # the reader, so b.csv is complete and the reader is inside a/c.csv while that one is still held.
    first, second = _csv(_rows(5000, seed=1)), _csv(_rows(20_000, seed=2))
    store = GatedStore(pause_at=len(second) // 2)
    store.gated_key = "train/a/c.csv"
    data_dir, spec, feeder = _channel(tmp_path, store, {"train/a/c.csv": second, "train/b.csv": first})
    feeder.start()
    thread, result = _read_in_thread(data_dir, "text/csv", "FastFile")
    wait_for(lambda: reader_position(os.getpid(), data_dir / "train" / "a" / "c.csv") >= len(second) // 4,
             what="the reader to reach the second file")
    assert store.opened[0] == "train/b.csv"
    store.release.set()
    thread.join(60)
    feeder.join(10)
    whole = read_channel("train", data_dir=_downloaded(tmp_path, store, spec), content_type="text/csv")
    _same(result["data"], whole)
    assert np.array_equal(result["data"].labels[:5000], _rows(5000, seed=1)[:, 0].astype(np.float32))


@pytest.mark.parametrize(("content_type", "make"), [("text/libsvm", _libsvm), ("application/x-parquet", _parquet),
                                                    ("application/x-recordio-protobuf", _recordio)])
def test_read_channel_streamed_other_formats_same_rows_as_downloaded(tmp_path, content_type, make):
    objects = {"train/part-0": make(_rows(3000, seed=3)), "train/part-1": make(_rows(1000, seed=4))}
    store = GatedStore()
    data_dir, spec, feeder = _channel(tmp_path, store, objects, "File")
    feeder.start()
    streamed = read_channel("train", data_dir=data_dir, content_type=content_type, input_mode="File")
    feeder.join(10)
    whole = read_channel("train", data_dir=_downloaded(tmp_path, store, spec), content_type=content_type)
    _same(streamed, whole)
    assert streamed.num_rows == 4000


@pytest.mark.parametrize("ranged", [False, True])
def test_read_channel_streamed_download_fails_midway_data_error_with_download_reason(tmp_path, monkeypatch,
                                                                                    ranged):
    if ranged:
        monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
        monkeypatch.setattr(fastfile, "UPTO_STEP", 4096)
    body = _csv(_rows(30_000))
    store = GatedStore(pause_at=len(body) // 2, fail=True)
    store.gated_key, store.hold = "train/a.csv", {"train/b.csv"}  # b.csv is still under way when a.csv breaks
    data_dir, _, feeder = _channel(tmp_path, store, {"train/a.csv": body, "train/b.csv": body})
    feeder.start()
    thread, result = _read_in_thread(data_dir, "text/csv", "FastFile")
    wait_for(lambda: reader_position(os.getpid(), data_dir / "train" / "a.csv") >= len(body) // 4,
             what="the reader to consume the first part")
    store.release.set()  # the held GET now breaks
    thread.join(60)
    store.unhold.set()
    feeder.join(10)
    assert not feeder.is_alive()
    assert isinstance(result.get("error"), DataError)
    assert str(result["error"]) == feeder.error
    assert feeder.error.startswith("ClientError: Could not download s3://b/train/a.csv for channel 'train'")
    # The file after it, incomplete, fails with the same reason instead of leaving its reader waiting.
    assert (data_dir / fastfile.MARKERS / "train" / "b.csv.failed").read_text() == feeder.error


@pytest.mark.parametrize("fail", [False, True])
def test_read_channel_streamed_recordio_decoded_into_one_array_as_it_downloads(tmp_path, monkeypatch, fail):
    # A dense recordIO file filled by ranges (its final size known from the start) is decoded block by block
    # while the rest downloads, not read whole first; a break midway fails the read with the download's reason.
    monkeypatch.setattr(fastfile, "RANGED_MIN", 1000)
    monkeypatch.setattr(fastfile, "UPTO_STEP", 4096)
    monkeypatch.setattr("opensage.algorithms.recordio_dense.BLOCK_BYTES", 8192)
    whole_reads: list[str] = []
    read_bytes = content.Source.read_bytes
    monkeypatch.setattr(content.Source, "read_bytes", lambda self: whole_reads.append(self.name) or read_bytes(self))
    body = _recordio(_rows(30_000))
    store = GatedStore(pause_at=len(body) // 2, fail=fail)
    data_dir, spec, feeder = _channel(tmp_path, store, {"train/a.rec": body})
    feeder.start()
    result = _read_while_held(data_dir, store, feeder, "a.rec", len(body), "application/x-recordio-protobuf")
    if fail:
        assert isinstance(result.get("error"), DataError) and str(result["error"]) == feeder.error
        assert feeder.error.startswith("ClientError: Could not download s3://b/train/a.rec for channel 'train'")
        return
    assert feeder.error is None and "error" not in result
    assert whole_reads == []  # never held whole in memory: decoded into the channel's array as it came
    whole = read_channel("train", data_dir=_downloaded(tmp_path, store, spec),
                         content_type="application/x-recordio-protobuf")
    _same(result["data"], whole)
    assert result["data"].num_rows == 30_000 and result["data"].features.dtype == np.float32
