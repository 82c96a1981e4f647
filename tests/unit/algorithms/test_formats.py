"""The first-party built-ins' shared data formats against the SDK's own writer and reader."""

import io
import json
import os
import threading

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
import scipy.sparse as sp

from opensage.algorithms import formats
from opensage.algorithms.content import DataError
from opensage.algorithms.formats import InferenceError

common = pytest.importorskip("sagemaker.amazon.common")

DTYPES = [np.float32, np.float64, np.int64]


def _sdk_dense(array, labels=None) -> bytes:
    buffer = io.BytesIO()
    common.write_numpy_to_dense_tensor(buffer, array, labels)
    return buffer.getvalue()


@pytest.mark.parametrize("feature_dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", [None, *DTYPES])
def test_write_numpy_to_dense_tensor_any_dtype_pair_same_bytes_as_sdk(feature_dtype, label_dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((12, 5)) * 50).astype(feature_dtype)
    labels = None if label_dtype is None else rng.integers(0, 3, 12).astype(label_dtype)
    ours = io.BytesIO()
    formats.write_numpy_to_dense_tensor(ours, array, labels)
    assert ours.getvalue() == _sdk_dense(array, labels)


@pytest.mark.parametrize("dtype", DTYPES)
def test_write_spmatrix_to_sparse_tensor_same_bytes_as_sdk(dtype):
    matrix = sp.random(25, 40, density=0.15, format="csr", random_state=3)
    matrix = (matrix * 10).astype(dtype)
    labels = np.arange(25, dtype=np.float32)
    expected, ours = io.BytesIO(), io.BytesIO()
    common.write_spmatrix_to_sparse_tensor(expected, matrix, labels)
    formats.write_spmatrix_to_sparse_tensor(ours, matrix, labels)
    assert ours.getvalue() == expected.getvalue()


def test_write_numpy_to_dense_tensor_unsupported_dtype_raises_like_sdk():
    array = np.ones((2, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="Unsupported dtype"):
        common.write_numpy_to_dense_tensor(io.BytesIO(), array)
    with pytest.raises(ValueError, match="Unsupported dtype"):
        formats.write_numpy_to_dense_tensor(io.BytesIO(), array)
    with pytest.raises(ValueError, match="Label shape"):
        formats.write_numpy_to_dense_tensor(io.BytesIO(), np.ones((2, 3)), np.ones(5))


def test_read_records_sdk_written_sparse_keys_shape_and_labels_preserved():
    matrix = sp.csr_matrix(np.array([[0, 1.5, 0, 0], [2.0, 0, 0, 3.0]], dtype=np.float32))
    buffer = io.BytesIO()
    common.write_spmatrix_to_sparse_tensor(buffer, matrix, np.array([1.0, 0.0]))
    records = formats.read_records(io.BytesIO(buffer.getvalue()))
    tensor = records[1].features["values"].float32_tensor
    assert list(tensor.keys) == [0, 3] and list(tensor.values) == [2.0, 3.0] and list(tensor.shape) == [4]
    assert records[0].label["values"].float64_tensor.values[0] == 1.0
    features, labels = formats.records_to_arrays(records)
    np.testing.assert_array_equal(features.toarray(), matrix.toarray())
    np.testing.assert_array_equal(labels, [1.0, 0.0])


def test_sdk_read_records_reads_our_bytes_and_response_records():
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    ours = io.BytesIO()
    formats.write_numpy_to_dense_tensor(ours, array, np.array([7, 8]))
    records = common.read_records(io.BytesIO(ours.getvalue()))
    assert list(records[1].features["values"].float64_tensor.values) == [3.0, 4.0, 5.0]
    assert records[1].label["values"].int32_tensor.values[0] == 8
    body = formats.encode_response({"score": np.array([0.25, 0.75]), "predicted_label": np.array([0.0, 1.0])},
                                   formats.RECORDIO_TYPE)
    answer = common.read_records(io.BytesIO(body))
    assert [r.label["predicted_label"].float32_tensor.values[0] for r in answer] == [0.0, 1.0]
    assert answer[0].label["score"].float32_tensor.values[0] == 0.25


# ---------------------------------------------------------------------------------------------- channels


def _channel(tmp_path, name, files):
    directory = tmp_path / name
    directory.mkdir(parents=True)
    for file_name, content in files.items():
        (directory / file_name).write_bytes(content)
    return tmp_path


def test_read_training_channel_manifest_shards_without_content_type_read_as_recordio(tmp_path):
    array = np.random.default_rng(1).random((10, 3)).astype(np.float32)
    labels = np.arange(10, dtype=np.float32)
    data_dir = _channel(tmp_path, "train", {
        "matrix_0.pbr": _sdk_dense(array[:5], labels[:5]), "matrix_1.pbr": _sdk_dense(array[5:], labels[5:]),
        ".amazon.manifest": json.dumps([{"prefix": "s3://b/p/"}, "matrix_0.pbr", "matrix_1.pbr"]).encode()})
    data = formats.read_training_channel("train", data_dir, {"TrainingInputMode": "File"}, supervised=True)
    np.testing.assert_array_equal(data.features, array)
    np.testing.assert_array_equal(data.labels, labels)


def test_read_training_channel_csv_label_first_supervised_all_features_unsupervised(tmp_path):
    data_dir = _channel(tmp_path, "train", {"part.csv": b"1,0.5,2\n0,1.5,3\n"})
    supervised = formats.read_training_channel("train", data_dir, {"ContentType": "text/csv"}, supervised=True)
    np.testing.assert_array_equal(supervised.labels, [1.0, 0.0])
    np.testing.assert_array_equal(supervised.features, [[0.5, 2.0], [1.5, 3.0]])
    unsupervised = formats.read_training_channel("train", data_dir, {"ContentType": "text/csv"},
                                                 supervised=False)
    assert unsupervised.labels is None and unsupervised.features.shape == (2, 3)
    explicit = formats.read_training_channel("train", data_dir, {"ContentType": "text/csv;label_size=1"},
                                             supervised=False)
    assert explicit.features.shape == (2, 2)


def test_read_training_channel_unlabelled_recordio_supervised_raises_naming_channel(tmp_path):
    data_dir = _channel(tmp_path, "validation", {"m.pbr": _sdk_dense(np.ones((3, 2), dtype=np.float32))})
    assert formats.read_training_channel("validation", data_dir, {}, supervised=False).labels is None
    with pytest.raises(DataError, match="validation"):
        formats.read_training_channel("validation", data_dir, {}, supervised=True)


def test_read_training_channel_unsupported_content_type_raises_naming_it(tmp_path):
    data_dir = _channel(tmp_path, "train", {"a": b"1 1:2\n"})
    with pytest.raises(DataError, match="text/libsvm"):
        formats.read_training_channel("train", data_dir, {"ContentType": "text/libsvm"}, supervised=True)


def test_read_training_channel_pipe_mode_fifo_recordio(tmp_path):
    array = np.random.default_rng(2).random((8, 4)).astype(np.float32)
    payload = _sdk_dense(array, np.ones(8, dtype=np.float32))
    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(payload))
    writer.start()
    data = formats.read_training_channel("train", tmp_path, {"TrainingInputMode": "Pipe",
                                                             "RecordWrapperType": "RecordIO"}, supervised=True)
    writer.join(5)
    np.testing.assert_array_equal(data.features, array)


# ---------------------------------------------------------------------------------------------- requests


def test_parse_request_json_dense_sparse_and_plain_rows():
    body = json.dumps({"instances": [{"features": [1.0, 2.0, 3.0]},
                                     {"data": {"features": {"values": [5.0], "keys": [2], "shape": [3]}}}]})
    matrix = formats.parse_request(body.encode(), "application/json")
    np.testing.assert_array_equal(matrix.toarray(), [[1, 2, 3], [0, 0, 5]])
    np.testing.assert_array_equal(formats.parse_request(b"[[1, 2], [3, 4]]", "application/json"), [[1, 2], [3, 4]])
    np.testing.assert_array_equal(formats.parse_request(b'{"features": [1, 2]}', "application/json"), [[1, 2]])


def test_parse_request_jsonlines_csv_and_recordio_agree():
    rows = np.array([[1.5, 2.0], [3.0, -4.0]], dtype=np.float32)
    jsonl = b'{"features": [1.5, 2.0]}\n{"features": [3.0, -4.0]}\n'
    for body, content_type in ((jsonl, "application/jsonlines"), (b"1.5,2\n3,-4\n", "text/csv"),
                               (_sdk_dense(rows), "application/x-recordio-protobuf")):
        np.testing.assert_array_equal(formats.parse_request(body, content_type), rows)


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"{not json", "application/json", 400),
    (b'{"instances": [{"x": 1}]}', "application/json", 400),
    (b"\x00\x01\x02", "application/x-recordio-protobuf", 400),
    (b"a,b", "text/csv", 400),
    (b"1,2", "image/png", 415),
])
def test_parse_request_bad_body_raises_inference_error(body, content_type, status):
    with pytest.raises(InferenceError) as info:
        formats.parse_request(body, content_type)
    assert info.value.status == status


def test_fit_width_wrong_width_names_feature_dim_sparse_padded():
    with pytest.raises(InferenceError, match="feature_dim"):
        formats.fit_width(np.ones((1, 3)), 4)
    assert formats.fit_width(sp.csr_matrix(np.ones((1, 2))), 5).shape == (1, 5)


def test_choose_accept_default_params_and_unsupported():
    supported = (formats.JSON_TYPE, formats.RECORDIO_TYPE)
    assert formats.choose_accept(None, supported) == (formats.JSON_TYPE, {})
    assert formats.choose_accept("*/*", supported) == (formats.JSON_TYPE, {})
    assert formats.choose_accept("application/json; verbose=true", supported) == (formats.JSON_TYPE,
                                                                                 {"verbose": "true"})
    with pytest.raises(InferenceError) as info:
        formats.choose_accept("text/html", supported)
    assert info.value.status == 406


def test_encode_response_json_jsonlines_csv_shapes():
    outputs = {"closest_cluster": np.array([1.0, 0.0]), "distance_to_cluster": np.array([0.5, 2.0])}
    doc = json.loads(formats.encode_response(outputs, formats.JSON_TYPE))
    assert doc == {"predictions": [{"closest_cluster": 1.0, "distance_to_cluster": 0.5},
                                   {"closest_cluster": 0.0, "distance_to_cluster": 2.0}]}
    lines = formats.encode_response(outputs, formats.JSONLINES_TYPE).decode().splitlines()
    assert json.loads(lines[1]) == {"closest_cluster": 0.0, "distance_to_cluster": 2.0}
    csv = formats.encode_response(outputs, formats.CSV_TYPE, csv_columns=("closest_cluster", "distance_to_cluster"))
    assert csv == b"1.0,0.5\n0.0,2.0\n"
    projections = json.loads(formats.encode_response({"projection": np.array([[1.0, 2.0]])}, formats.JSON_TYPE,
                                                     json_key="projections"))
    assert projections == {"projections": [{"projection": [1.0, 2.0]}]}
