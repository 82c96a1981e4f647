import io
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
import scipy.sparse as sp

from opensage.algorithms import recordio

common = pytest.importorskip("sagemaker.amazon.common")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_encode_dense_matches_sdk_bytes(dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((20, 6)) * 100).astype(dtype)
    labels = np.arange(20).astype(dtype)
    expected = io.BytesIO()
    common.write_numpy_to_dense_tensor(expected, array, labels)
    assert recordio.encode_dense(array, labels) == expected.getvalue()


def test_encode_sparse_matches_sdk_bytes():
    matrix = sp.random(30, 40, density=0.1, format="csr", dtype=np.float32, random_state=1)
    labels = np.arange(30, dtype=np.float32)
    expected = io.BytesIO()
    common.write_spmatrix_to_sparse_tensor(expected, matrix, labels)
    assert recordio.encode_sparse(matrix, labels) == expected.getvalue()


def test_decode_matrix_sdk_dense_roundtrip():
    array = np.random.default_rng(2).random((15, 4)).astype(np.float32)
    labels = np.arange(15, dtype=np.float32)
    buf = io.BytesIO()
    common.write_numpy_to_dense_tensor(buf, array, labels)
    features, decoded = recordio.decode_matrix(buf.getvalue())
    np.testing.assert_array_equal(features, array)
    np.testing.assert_array_equal(decoded, labels)


def test_decode_matrix_sdk_sparse_roundtrip():
    matrix = sp.random(25, 12, density=0.2, format="csr", dtype=np.float32, random_state=3)
    buf = io.BytesIO()
    common.write_spmatrix_to_sparse_tensor(buf, matrix, np.ones(25, dtype=np.float32))
    features, labels = recordio.decode_matrix(buf.getvalue())
    assert sp.issparse(features) and features.shape == (25, 12)
    assert (features != matrix).nnz == 0
    np.testing.assert_array_equal(labels, np.ones(25))


def test_read_records_our_bytes_parse_with_sdk_reader():
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    records = common.read_records(io.BytesIO(recordio.encode_dense(array, np.array([1.0, 2.0, 3.0]))))
    assert list(records[1].features["values"].float64_tensor.values) == [4.0, 5.0, 6.0, 7.0]
    assert list(records[2].label["values"].float64_tensor.values) == [3.0]


def test_iter_records_padding_and_little_endian_header():
    framed = recordio.frame(b"abcde")
    assert framed[:4] == bytes.fromhex("0a23d7ce") and framed[4:8] == (5).to_bytes(4, "little")
    assert len(framed) == 16 and framed.endswith(b"\x00\x00\x00")
    assert list(recordio.iter_records(framed + recordio.frame(b"xyzw"))) == [b"abcde", b"xyzw"]


def test_iter_records_split_record_reassembled():
    header = lambda n, flag: recordio._HEADER.pack(recordio.MAGIC, (flag << 29) | n)  # noqa: E731
    stream = header(2, 1) + b"ab\x00\x00" + header(3, 3) + b"cde\x00"
    assert list(recordio.iter_records(stream)) == [b"ab" + recordio._MAGIC_BYTES + b"cde"]


def test_iter_records_bad_magic_raises():
    with pytest.raises(recordio.RecordIOError, match="bad RecordIO magic"):
        list(recordio.iter_records(b"\x00" * 12))


def test_encode_label_records_scores_readable_by_sdk():
    body = recordio.encode_label_records({"score": np.array([0.25, 0.75])})
    records = common.read_records(io.BytesIO(body))
    assert [list(r.label["score"].float32_tensor.values) for r in records] == [[0.25], [0.75]]


@pytest.mark.parametrize("dtype", [np.float64, np.int32])
def test_decode_matrix_float64_and_int32_tensors_decoded(dtype):
    array = (np.arange(24).reshape(6, 4) * 3).astype(dtype)
    buf = io.BytesIO()
    common.write_numpy_to_dense_tensor(buf, array.astype(np.float64) if dtype == np.float64 else array.astype(int),
                                       np.zeros(6))
    features, labels = recordio.decode_matrix(buf.getvalue())
    np.testing.assert_array_equal(features, array.astype(np.float32))
    np.testing.assert_array_equal(labels, np.zeros(6))
