"""A File-mode recordio-protobuf channel decoded straight into one array (issue 12 item 5: pca / kmeans read
200 MB channels).

Every case is written by the SDK's own writers (``sagemaker.amazon.common``, what ``record_set()`` uploads) as
several files, and must give exactly what reading file by file and concatenating gives
(``content.read_source`` + ``content._concat``, the general path): dtype, shape, bytes, or the same error.
"""

import gzip
import io
import os
import re
import tracemalloc

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
import scipy.sparse as sp

from opensage.algorithms import content, recordio_dense
from opensage.algorithms.content import RECORDIO, DataError, read_channel

common = pytest.importorskip("sagemaker.amazon.common")
RECORDIO_TYPE = "application/x-recordio-protobuf"


def _sdk(features, labels=None) -> bytes:
    buf = io.BytesIO()
    if sp.issparse(features):
        common.write_spmatrix_to_sparse_tensor(buf, features, labels)
    else:
        common.write_numpy_to_dense_tensor(buf, features, labels)
    return buf.getvalue()


def _channel(tmp_path, files: dict[str, bytes], manifest: bool = False):
    directory = tmp_path / "train"
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (directory / name).write_bytes(body)
    if manifest:  # what record_set() uploads beside its shards: skipped when the channel is listed
        (directory / ".amazon.manifest").write_text('[{"prefix": "s3://b/p/"}, "matrix_0.pbr"]')
    return tmp_path


def _general(data_dir, require_labels=True):
    """File by file, then concatenated: the path every other format takes."""
    sources = content.channel_sources("train", data_dir, fmt=RECORDIO)
    parts = [content.read_source("train", s, RECORDIO, require_labels=require_labels) for s in sources]
    return content._concat("train", parts)


def _assert_same(got, want):
    if sp.issparse(want.features):
        assert sp.issparse(got.features) and got.features.shape == want.features.shape
        assert (got.features != want.features).nnz == 0
    else:
        assert isinstance(got.features, np.ndarray)
        assert got.features.dtype == want.features.dtype and got.features.shape == want.features.shape
        assert got.features.flags.c_contiguous and got.features.flags.writeable
        assert got.features.tobytes() == want.features.tobytes()
    if want.labels is None:
        assert got.labels is None
    else:
        assert got.labels.dtype == want.labels.dtype and got.labels.tobytes() == want.labels.tobytes()


def _check(data_dir, require_labels=True):
    try:
        want = _general(data_dir, require_labels)
    except DataError as exc:
        with pytest.raises(DataError, match=re.escape(str(exc))):
            read_channel("train", data_dir=data_dir, content_type=RECORDIO_TYPE, require_labels=require_labels)
        return None
    got = read_channel("train", data_dir=data_dir, content_type=RECORDIO_TYPE, require_labels=require_labels)
    _assert_same(got, want)
    return got


def _values(dtype, rows, cols, seed):
    """``"small"``: int32 tensor values in [0, 128): one varint byte each, so frames of equal length."""
    rng = np.random.default_rng(seed)
    if dtype == "small":
        return rng.integers(0, 128, size=(rows, cols))
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-300, 300, size=(rows, cols)).astype(dtype)
    return rng.normal(size=(rows, cols)).astype(dtype)


@pytest.fixture
def small_blocks(monkeypatch):
    """A few records per block, so a file spans several blocks."""
    monkeypatch.setattr(recordio_dense, "BLOCK_BYTES", 200, raising=False)


@pytest.fixture
def whole_reads(monkeypatch):
    """Count files read whole into memory (the general path)."""
    calls = []
    original = content.Source.read_bytes

    def counting(self):
        calls.append(self.name)
        return original(self)

    monkeypatch.setattr(content.Source, "read_bytes", counting)
    return calls


# the SDK writes numpy's int (int64) as an int32 tensor
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, "small"])
@pytest.mark.parametrize("label", [None, np.float32, np.float64, np.int64])
def test_read_channel_sdk_dense_files_any_tensor_kind_same_arrays_as_file_by_file(tmp_path, small_blocks,
                                                                                   whole_reads, dtype, label):
    files = {}
    for i, rows in enumerate((7, 1, 12)):
        labels = None if label is None else np.arange(rows).astype(label) * (i + 1)
        files[f"matrix_{i}.pbr"] = _sdk(_values(dtype, rows, 5, i), labels)
    data_dir = _channel(tmp_path, files, manifest=True)
    data = _check(data_dir, require_labels=label is not None)
    assert data.features.shape == (20, 5)
    whole_reads.clear()
    read_channel("train", data_dir=data_dir, content_type=RECORDIO_TYPE, require_labels=label is not None)
    if dtype != np.int64:  # (int32 varints of different byte lengths: frames differ, files read whole)
        assert whole_reads == []


def test_read_channel_sdk_dense_shards_never_read_whole_one_copy_in_memory(tmp_path, whole_reads):
    """Shards of 2 MB: decoded a block at a time into the channel's array (no file's bytes held whole, no
    per-file arrays concatenated): the peak is about one float32 copy of the values."""
    features = _values(np.float32, 20_000, 25, 0)
    files = {f"matrix_{i}.pbr": _sdk(features[i * 10_000:(i + 1) * 10_000]) for i in range(2)}
    data_dir = _channel(tmp_path, files, manifest=True)
    tracemalloc.start()
    try:
        data = read_channel("train", data_dir=data_dir, content_type=RECORDIO_TYPE, require_labels=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert whole_reads == []
    np.testing.assert_array_equal(data.features, features)
    assert peak < 1.5 * features.nbytes + recordio_dense.BLOCK_BYTES


def _label_first(frame: bytes) -> bytes:
    """One SDK record with its two map fields swapped (label before features): valid protobuf, same length,
    but not record 0's bytes."""
    payload = frame[8:]
    split = 2 + payload[1]  # field 1 (features): tag, one-byte length, entry
    return frame[:8] + payload[split:] + payload[:split]


def _channel_with_an_odd_file(tmp_path):
    """a.pbr (6 rows), b.pbr (9 rows; record 7's fields swapped: same length, not record 0's bytes), c.pbr (4)."""
    values, labels = _values(np.float32, 9, 3, 1), np.arange(9, dtype=np.float32)
    body = _sdk(values, labels)
    stride = len(body) // 9
    odd = body[:7 * stride] + _label_first(body[7 * stride:8 * stride]) + body[8 * stride:]
    files = {"a.pbr": _sdk(_values(np.float32, 6, 3, 2), labels[:6]), "b.pbr": odd,
             "c.pbr": _sdk(values[:4], labels[:4])}
    return _channel(tmp_path, files), values, odd, stride


def test_read_channel_record_unlike_first_in_a_later_block_that_file_decoded_general_way(tmp_path, small_blocks,
                                                                                        whole_reads):
    """Frames of one length whose non-value bytes differ after the first blocks: that file alone is decoded
    the general way (into its rows of the channel's array), the others stay on the block path."""
    data_dir, values, odd, stride = _channel_with_an_odd_file(tmp_path)
    want = _general(data_dir)
    whole_reads.clear()
    got = read_channel("train", data_dir=data_dir, content_type=RECORDIO_TYPE)
    _assert_same(got, want)
    assert whole_reads == ["b.pbr"]
    np.testing.assert_array_equal(got.features[6:15], values)
    corrupt = bytearray(odd)
    corrupt[7 * stride + 8] ^= 0x01  # no longer a Record at all: the same error as file by file
    (data_dir / "train" / "b.pbr").write_bytes(bytes(corrupt))
    _check(data_dir)


def test_read_channel_int32_records_of_different_lengths_same_arrays(tmp_path, small_blocks):
    """int32 varints of different byte lengths: frames differ in length, the general path decodes."""
    values = np.array([[1, 2], [300, -5], [70000, 3]], dtype=np.int64)
    files = {"a.pbr": _sdk(values), "b.pbr": _sdk(values[::-1].copy(), np.array([1, 2, 3], np.int64))}
    _check(_channel(tmp_path, files), require_labels=False)
    files = {"a.pbr": _sdk(values, np.array([5, 6, 7], np.int64)),
             "b.pbr": _sdk(values[::-1].copy(), np.array([1, 2, 300], np.int64))}
    _check(_channel(tmp_path / "labelled", files))


def test_read_channel_sparse_and_mixed_files_same_as_file_by_file(tmp_path, whole_reads):
    rng = np.random.default_rng(3)
    matrix = sp.random(8, 6, density=0.4, format="csr", dtype=np.float32, random_state=rng)
    files = {"a.pbr": _sdk(matrix, np.ones(8, np.float32)), "b.pbr": _sdk(matrix[:3], np.zeros(3, np.float32))}
    data = _check(_channel(tmp_path / "sparse", files))
    assert sp.issparse(data.features)
    files = {"a.pbr": _sdk(_values(np.float32, 4, 6, 0), np.ones(4, np.float32)),
             "b.pbr": _sdk(matrix, np.ones(8, np.float32))}
    _check(_channel(tmp_path / "mixed", files))


@pytest.mark.parametrize("case", ["widths", "labels_on_some", "no_labels_required", "truncated", "gzip",
                                  "garbage", "tiny"])
def test_read_channel_files_not_alike_same_result_or_error_as_file_by_file(tmp_path, case):
    a = _sdk(_values(np.float32, 4, 3, 0), np.ones(4, np.float32))
    files = {
        "widths": {"a.pbr": a, "b.pbr": _sdk(_values(np.float32, 4, 2, 1), np.ones(4, np.float32))},
        "labels_on_some": {"a.pbr": a, "b.pbr": _sdk(_values(np.float32, 4, 3, 1))},
        "no_labels_required": {"a.pbr": _sdk(_values(np.float32, 4, 3, 1))},
        "truncated": {"a.pbr": a, "b.pbr": a[:-4]},
        "gzip": {"a.pbr": a, "b.pbr.gz": gzip.compress(a)},
        "garbage": {"a.pbr": a, "b.pbr": b"\x00" * len(a)},
        "tiny": {"a.pbr": a, "b.pbr": b"\x0a"},
    }[case]
    _check(_channel(tmp_path, files))


def test_read_channel_corrupted_bytes_never_disagree_with_file_by_file(tmp_path, small_blocks):
    rng = np.random.default_rng(11)
    body = _sdk(_values(np.float32, 6, 4, 5), np.arange(6, dtype=np.float32))
    for trial in range(150):
        corrupt = bytearray(body)
        for _ in range(int(rng.integers(1, 3))):
            corrupt[int(rng.integers(len(corrupt)))] = int(rng.integers(256))
        _check(_channel(tmp_path / str(trial), {"a.pbr": body, "b.pbr": bytes(corrupt)}))


@pytest.mark.parametrize("rows", [None, 1, 4, 7, 100])
def test_dense_channel_blocks_same_rows_as_read_channel_including_a_file_decoded_general_way(tmp_path, small_blocks,
                                                                                              rows):
    """``DenseChannel.blocks`` (PCA's one pass, never the whole channel): the rows concatenated equal
    ``read_channel``'s arrays at any block size, also across a file whose later record is unlike record 0
    (its rest decoded the general way) and across file ends."""
    data_dir = _channel_with_an_odd_file(tmp_path)[0]
    want = read_channel("train", data_dir=data_dir, content_type=RECORDIO_TYPE)
    dense = content.DenseChannel.of("train", content.channel_sources("train", data_dir, fmt=RECORDIO), True)
    assert (dense.rows, dense.width, dense.labelled) == (19, 3, True)
    parts = [(f.copy(), y.copy()) for f, y in dense.blocks(rows)]
    assert rows is None or all(len(f) <= rows for f, _ in parts)
    assert np.concatenate([f for f, _ in parts]).tobytes() == want.features.tobytes()
    assert np.concatenate([y for _, y in parts]).tobytes() == want.labels.tobytes()


def test_dense_channel_none_for_sparse_or_unlike_files(tmp_path):
    sparse = sp.random(20, 5, density=0.3, format="csr", random_state=0, dtype=np.float32)
    data_dir = _channel(tmp_path, {"a.pbr": _sdk(sparse)})
    assert content.DenseChannel.of("train", content.channel_sources("train", data_dir, fmt=RECORDIO), False) is None
    data_dir = _channel(tmp_path / "two", {"a.pbr": _sdk(_values(np.float32, 4, 3, 0)),
                                           "b.pbr": _sdk(_values(np.float32, 4, 5, 0))})
    assert content.DenseChannel.of("train", content.channel_sources("train", data_dir, fmt=RECORDIO), False) is None
