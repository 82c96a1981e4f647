"""The vectorised dense RecordIO-protobuf decoder (issue 12) against today's per-record protobuf path.

Every case is written by the SDK's own writers (``sagemaker.amazon.common``) and must decode to exactly the
arrays ``records_to_matrix(read_records(...))`` gives (dtype, shape, bytes), or raise the same error.
"""

import io
import os
import re
import struct

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
import scipy.sparse as sp

from opensage.algorithms import recordio, recordio_dense

common = pytest.importorskip("sagemaker.amazon.common")


def _sdk_dense(array, labels=None) -> bytes:
    buf = io.BytesIO()
    common.write_numpy_to_dense_tensor(buf, array, labels)
    return buf.getvalue()


def _reference(buf: bytes):
    """Today's path: one protobuf Record per record."""
    return recordio.records_to_matrix(recordio.read_records(buf))


def _assert_same(actual, expected):
    for got, want in zip(actual, expected, strict=True):
        if want is None:
            assert got is None
            continue
        if sp.issparse(want):
            assert sp.issparse(got) and got.shape == want.shape and (got != want).nnz == 0
            continue
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.flags.c_contiguous and got.flags.writeable
        assert got.tobytes() == want.tobytes()


@pytest.fixture
def protobuf_calls(monkeypatch):
    """Count per-record protobuf parses (the slow path) while still parsing."""
    calls = []
    original = recordio.parse_record

    def counting(payload):
        calls.append(len(payload))
        return original(payload)

    monkeypatch.setattr(recordio, "parse_record", counting)
    return calls


def _features(dtype, rows=40, cols=7, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):  # multi-byte and 10-byte (negative) varints, int32 extremes
        array = rng.integers(-2**31, 2**31, size=(rows, cols), dtype=np.int64)
        array[0, :2] = [-2**31, 2**31 - 1][:cols]
        array[-1, :3] = [0, 127, 128][:cols]
        return array.astype(dtype)
    array = (rng.standard_normal((rows, cols)) * 1e3).astype(dtype)
    array[rows // 2, :3] = [np.nan, np.inf, -0.0][:cols]
    return array


@pytest.mark.parametrize("label_dtype", [None, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("feature_dtype", [np.float32, np.float64, np.int64])
def test_decode_matrix_sdk_dense_any_dtype_same_arrays_without_protobuf_per_record(
        feature_dtype, label_dtype, protobuf_calls):
    array = _features(feature_dtype)
    labels = None if label_dtype is None else (np.arange(40) * 3 - 50).astype(label_dtype)
    buf = _sdk_dense(array, labels)
    decoded = recordio.decode_matrix(buf)
    assert protobuf_calls == []
    _assert_same(decoded, _reference(buf))
    np.testing.assert_array_equal(decoded[0], array.astype(np.float32))


def test_decode_matrix_small_int32_values_same_length_records_template_path(protobuf_calls):
    array = np.arange(60, dtype=np.int64).reshape(12, 5) % 100  # one-byte varints: equal-length records
    buf = _sdk_dense(array, np.ones(12, dtype=np.int64))
    decoded = recordio.decode_matrix(buf)
    assert protobuf_calls == []
    _assert_same(decoded, _reference(buf))


def test_decode_matrix_equal_length_int32_records_different_value_counts_fall_back(protobuf_calls):
    # [1, 200] and [200, 1] and [1, 1, 1] all pack into 3 bytes: the template must not mistake them for one width
    buf = _sdk_dense(np.array([[1, 200]]), None) + _sdk_dense(np.array([[200, 1]]))
    buf += b"".join(recordio.frame(p) for p in recordio.iter_records(_sdk_dense(np.array([[1, 1, 1]]))))
    with pytest.raises(recordio.RecordIOError, match="record 2 has 3 feature values"):
        recordio.decode_matrix(buf)
    assert protobuf_calls


def test_decode_matrix_our_encode_dense_bytes_same_arrays(protobuf_calls):
    array = _features(np.float32, rows=25, cols=60)  # 240-byte packed values: two-byte length varints
    buf = recordio.encode_dense(array, np.arange(25, dtype=np.float32))
    decoded = recordio.decode_matrix(buf)
    assert protobuf_calls == []
    _assert_same(decoded, _reference(buf))


@pytest.mark.parametrize("shape", [(1, 3), (20000, 50)])
def test_decode_matrix_one_record_and_pca_sized_file_same_arrays(shape, protobuf_calls):
    array = _features(np.float32, *shape)
    buf = _sdk_dense(array, np.zeros(shape[0], dtype=np.float32))
    decoded = recordio.decode_matrix(buf)
    assert protobuf_calls == []
    _assert_same(decoded, _reference(buf))


def _dmlc_frames(payload: bytes) -> bytes:
    """dmlc-core ``RecordIOWriter::WriteRecord``: split the payload at each 4-aligned occurrence of the magic
    (eliding it): flag 1 = first part, 2 = middle, 3 = last, 0 = whole."""
    magic = struct.pack("<I", recordio.MAGIC)

    def part(flag, chunk):
        return struct.pack("<II", recordio.MAGIC, (flag << 29) | len(chunk)) + chunk + b"\0" * ((-len(chunk)) & 3)

    out, start = [], 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i:i + 4] == magic:
            out.append(part(1 if start == 0 else 2, payload[start:i]))
            start = i + 4
    out.append(part(3 if start else 0, payload[start:]))
    return b"".join(out)


def test_decode_matrix_records_split_across_continuation_frames_same_arrays(protobuf_calls):
    array = _features(np.float32, rows=10, cols=4)
    magic_value = np.frombuffer(struct.pack("<I", recordio.MAGIC), dtype="<f4")[0]
    array[3, 1] = array[5, 0] = array[5, 2] = magic_value  # values start 4-aligned at payload byte 16
    sdk = _sdk_dense(array, np.arange(10, dtype=np.float32))
    buf = b"".join(_dmlc_frames(p) for p in recordio.iter_records(sdk))
    flags = [lrec >> 29 for _, lrec in _frame_headers(buf)]
    assert flags.count(1) == 2 and flags.count(2) == 1 and flags.count(3) == 2
    decoded = recordio.decode_matrix(buf)
    assert protobuf_calls == []
    _assert_same(decoded, _reference(buf))
    np.testing.assert_array_equal(decoded[0], array)


def _frame_headers(buf):
    offset = 0
    while offset < len(buf):
        magic, lrec = struct.unpack_from("<II", buf, offset)
        yield magic, lrec
        length = lrec & ((1 << 29) - 1)
        offset += 8 + length + ((-length) & 3)


def _with_uid(buf: bytes) -> bytes:
    records = recordio.read_records(buf)
    records[1].uid = "row-1"
    return b"".join(recordio.frame(r.SerializeToString()) for r in records)


def _sdk_sparse(dtype=np.float32) -> bytes:
    buf = io.BytesIO()
    matrix = sp.random(12, 9, density=0.3, format="csr", dtype=dtype, random_state=4)
    common.write_spmatrix_to_sparse_tensor(buf, matrix, np.arange(12, dtype=np.float32))
    return buf.getvalue()


def _labels_of_widths(widths):
    record = recordio.record_class()()
    out = []
    for width in widths:
        record.Clear()
        record.features["values"].float32_tensor.values.extend([1.0, 2.0])
        record.label["values"].float32_tensor.values.extend([float(width)] * width)
        out.append(recordio.frame(record.SerializeToString()))
    return b"".join(out)


_FALLBACKS = {
    "sparse": _sdk_sparse,
    "sparse-float64": lambda: _sdk_sparse(np.float64),
    "mixed-kinds": lambda: _sdk_dense(np.ones((3, 4), np.float32)) + _sdk_dense(np.ones((2, 4))),
    "label-on-some": lambda: _sdk_dense(np.ones((3, 4), np.float32), np.ones(3, np.float32))
    + _sdk_dense(np.ones((2, 4), np.float32)),
    "label-on-later-only": lambda: _sdk_dense(np.ones((2, 4), np.float32))
    + _sdk_dense(np.ones((3, 4), np.float32), np.ones(3, np.float32)),
    "uid": lambda: _with_uid(_sdk_dense(np.ones((3, 4), np.float32), np.ones(3, np.float32))),
    "zero-columns": lambda: _sdk_dense(np.ones((3, 0), np.float32)),
    "widths-3-then-5": lambda: _sdk_dense(np.ones((1, 3), np.float32)) + _sdk_dense(np.ones((1, 5), np.float32)),
    "widths-3-5-4-4-float64": lambda: _sdk_dense(np.ones((1, 3))) + _sdk_dense(np.ones((1, 5)))
    + _sdk_dense(np.ones((2, 4))),
    "label-widths-differ": lambda: _labels_of_widths([1, 3]),
    "response-records": lambda: recordio.encode_label_records({"score": np.array([0.5, 1.5])}),
}


@pytest.mark.parametrize("case", sorted(_FALLBACKS))
def test_decode_matrix_not_common_dense_layout_falls_back_to_protobuf_same_result(case, protobuf_calls):
    buf = _FALLBACKS[case]()
    try:
        expected = _reference(buf)
    except recordio.RecordIOError as exc:
        with pytest.raises(recordio.RecordIOError, match=re.escape(str(exc))):
            recordio.decode_matrix(buf)
    else:
        protobuf_calls.clear()
        _assert_same(recordio.decode_matrix(buf), expected)
    assert protobuf_calls, "the per-record protobuf path decides these"


@pytest.mark.parametrize("body", [b"", b"\x00" * 12, recordio.frame(b"\xff\xff"), _sdk_dense(np.ones((3, 4)))[:-9]])
def test_decode_matrix_empty_or_malformed_same_result_as_protobuf_path(body):
    try:
        expected = _reference(body)
    except recordio.RecordIOError as exc:
        with pytest.raises(recordio.RecordIOError, match=re.escape(str(exc))):
            recordio.decode_matrix(body)
    else:
        _assert_same(recordio.decode_matrix(body), expected)


@pytest.mark.parametrize("feature_dtype", [np.float32, np.int64])
def test_decode_matrix_corrupted_bytes_fast_path_never_disagrees_with_protobuf(feature_dtype):
    """Flip single bytes anywhere (structure included): the result or error is always the protobuf path's."""
    array = _features(feature_dtype, rows=4, cols=3, seed=5)
    clean = _sdk_dense(array, np.arange(4, dtype=np.float32))
    rng = np.random.default_rng(6)
    for _ in range(400):
        body = bytearray(clean)
        body[int(rng.integers(len(body)))] = int(rng.integers(256))
        body = bytes(body)
        try:
            expected = _reference(body)
        except recordio.RecordIOError as exc:
            with pytest.raises(recordio.RecordIOError) as raised:
                recordio.decode_matrix(body)
            assert str(raised.value) == str(exc)
            continue
        _assert_same(recordio.decode_matrix(body), expected)


def test_decode_dense_declines_sparse_and_accepts_bytearray_memoryview():
    assert recordio_dense.decode_dense(_sdk_sparse()) is None
    buf = _sdk_dense(np.eye(3, dtype=np.float32))
    for wrapped in (bytearray(buf), memoryview(buf)):
        _assert_same(recordio_dense.decode_dense(wrapped), _reference(buf))


def _dense_with_shape(rows):
    record = recordio.record_class()()
    out = []
    for values in rows:
        record.Clear()
        tensor = record.features["values"].float32_tensor
        tensor.values.extend(values)
        tensor.shape.append(len(values))
        out.append(recordio.frame(record.SerializeToString()))
    return b"".join(out)


def test_decode_matrix_dense_records_carrying_shape_decode_values_only():
    # Legal protobuf the SDK's dense writer never makes: the protobuf path copied the shape bytes in as values
    features, labels = recordio.decode_matrix(_dense_with_shape([[1.5, 2.5], [3.5, 4.5]]))
    np.testing.assert_array_equal(features, np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32))
    assert labels is None
    assert recordio.decode_matrix(_dense_with_shape([[], []]))[0].shape == (2, 0)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        if value < 0x80:
            return bytes(out + bytes([value]))
        out.append((value & 0x7F) | 0x80)
        value >>= 7


def _int32_record(packed: bytes) -> bytes:
    """One Record whose features["values"] is an Int32Tensor with these raw packed value bytes."""
    tensor = b"\x0a" + _varint_bytes(len(packed)) + packed
    value = b"\x3a" + _varint_bytes(len(tensor)) + tensor
    entry = b"\x0a\x06values\x12" + _varint_bytes(len(value)) + value
    return recordio.frame(b"\x0a" + _varint_bytes(len(entry)) + entry)


@pytest.mark.parametrize("packed", [
    b"\x80\x00\x05",  # non-minimal 0, then 5
    b"\xff\xff\xff\xff\x0f\x01",  # 5 bytes encoding 2**32 - 1 (not an int32 encoding)
    b"\x80\x80\x80\x80\x08\x01",  # 2**31 in 5 bytes
    b"\xff\xff\xff\xff\x07\x02",  # 2**31 - 1, then 2
    _varint_bytes(2**64 - 5) + b"\x03",  # -5 sign-extended, then 3
    b"\xfb\xff\xff\xff\xff\xff\xff\xff\xff\x03\x03",  # 10 bytes, last byte 3 (overflows 64 bits)
    b"\xfb\xff\xff\xff\x0f\x00\x03",  # -5 as a 5-byte uint32, then 0, 3
])
def test_decode_matrix_int32_varint_encodings_same_as_protobuf(packed):
    body = _int32_record(packed) * 2
    try:
        expected = _reference(body)
    except recordio.RecordIOError as exc:
        with pytest.raises(recordio.RecordIOError, match=re.escape(str(exc))):
            recordio.decode_matrix(body)
    else:
        _assert_same(recordio.decode_matrix(body), expected)


def test_decode_matrix_spliced_files_of_any_widths_kinds_labels_never_disagree_with_protobuf():
    """Several SDK files concatenated (widths, tensor kinds and labels differing between them)."""
    rng = np.random.default_rng(7)
    dtypes = (np.float32, np.float64, np.int64)
    for _ in range(300):
        parts = []
        same_kind, same_label = int(rng.integers(3)), int(rng.integers(3))  # mostly shared: widths then decide
        for _ in range(int(rng.integers(1, 4))):
            rows, cols = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            kind = same_kind if rng.random() < 0.8 else int(rng.integers(3))
            label = same_label if rng.random() < 0.8 else int(rng.integers(3))
            labels = [None, np.ones(rows, np.float32), np.arange(rows)][label]
            parts.append(_sdk_dense(_features(dtypes[kind], rows, cols, int(rng.integers(99))), labels))
        body = b"".join(parts)
        try:
            expected = _reference(body)
        except recordio.RecordIOError as exc:
            with pytest.raises(recordio.RecordIOError, match=re.escape(str(exc))):
                recordio.decode_matrix(body)
            continue
        _assert_same(recordio.decode_matrix(body), expected)
