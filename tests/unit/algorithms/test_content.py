import gzip
import io
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import numpy as np
import pytest
import scipy.sparse as sp

from opensage.algorithms import recordio
from opensage.algorithms.content import (
    DataError,
    parse_content_type,
    parse_payload,
    read_channel,
    sagemaker_base_dir,
)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_sagemaker_base_dir_env_relocates_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path))
    assert sagemaker_base_dir() == tmp_path
    monkeypatch.delenv("SAGEMAKER_BASE_DIR")
    assert str(sagemaker_base_dir()) == "/opt/ml"


@pytest.mark.parametrize(("value", "expected"), [
    (None, ("libsvm", {})), ("text/csv", ("csv", {})), ("text/csv; label_size=1", ("csv", {"label_size": "1"})),
    ("application/x-recordio-protobuf", ("recordio-protobuf", {})), ("application/x-parquet", ("parquet", {})),
    ("text/x-libsvm", ("libsvm", {})),
])
def test_parse_content_type_known_types_parsed(value, expected):
    assert parse_content_type(value) == expected


def test_parse_content_type_unknown_raises():
    with pytest.raises(DataError, match="'image/png' is not supported"):
        parse_content_type("image/png")


def test_read_channel_csv_multiple_nested_gzip_files_concatenated(tmp_path):
    _write(tmp_path / "train" / "a.csv", "1,0.5,2\n0,1.5,3\n")
    _write(tmp_path / "train" / "sub" / "b.csv.gz", gzip.compress(b"1,,4\n"))
    _write(tmp_path / "train" / ".hidden.csv", "garbage\n")
    _write(tmp_path / "train" / "x.amazon.manifest", "garbage\n")
    data = read_channel("train", data_dir=tmp_path, content_type="text/csv;label_size=1")
    np.testing.assert_array_equal(data.labels, [1, 0, 1])
    assert data.features.dtype == np.float32 and data.features.flags.c_contiguous
    np.testing.assert_array_equal(data.features[:2], [[0.5, 2], [1.5, 3]])
    assert np.isnan(data.features[2, 0]) and data.features[2, 1] == 4
    assert data.weights is None


def test_read_channel_csv_weights_second_column(tmp_path):
    _write(tmp_path / "train" / "a.csv", "1,0.2,5,6\n0,0.8,7,8\n")
    data = read_channel("train", data_dir=tmp_path, content_type="text/csv", csv_weights=True)
    np.testing.assert_allclose(data.weights, [0.2, 0.8])
    np.testing.assert_array_equal(data.features, [[5, 6], [7, 8]])


def test_read_channel_csv_bad_value_names_file_and_line(tmp_path):
    rows = [f"{i % 2},{i}.5,{i}" for i in range(30)]
    rows[16] = "1,abc,3"
    _write(tmp_path / "train" / "data.csv", "\n".join(rows) + "\n")
    with pytest.raises(DataError, match="train channel: file data.csv line 17: could not convert 'abc' to float"):
        read_channel("train", data_dir=tmp_path, content_type="text/csv")


def test_read_channel_csv_ragged_row_names_line(tmp_path):
    _write(tmp_path / "validation" / "v.csv", "1,2,3\n0,1\n")
    with pytest.raises(DataError, match="file v.csv line 2: expected 3 columns"):
        read_channel("validation", data_dir=tmp_path, content_type="text/csv")


def test_read_channel_missing_or_empty_returns_none(tmp_path):
    assert read_channel("train", data_dir=tmp_path, content_type="text/csv") is None
    _write(tmp_path / "train" / "empty.csv", "")
    assert read_channel("train", data_dir=tmp_path, content_type="text/csv") is None


def test_read_channel_libsvm_default_content_type(tmp_path):
    _write(tmp_path / "train" / "a.libsvm", "1 0:1.5 3:2\n0 1:0.5\n")
    data = read_channel("train", data_dir=tmp_path, content_type=None)
    assert sp.issparse(data.features) and data.features.shape == (2, 4)
    np.testing.assert_array_equal(data.features.toarray(), [[1.5, 0, 0, 2], [0, 0.5, 0, 0]])
    np.testing.assert_array_equal(data.labels, [1, 0])


def test_read_channel_libsvm_label_weight_parsed(tmp_path):
    _write(tmp_path / "train" / "a.txt", "1:0.5 1:2\n0:2 2:1\n")
    data = read_channel("train", data_dir=tmp_path, content_type="text/libsvm")
    np.testing.assert_array_equal(data.weights, [0.5, 2])
    np.testing.assert_array_equal(data.labels, [1, 0])


def test_read_channel_libsvm_bad_line_named(tmp_path):
    _write(tmp_path / "train" / "a.txt", "1 1:2\n0 2:1\n1 3:x\n")
    with pytest.raises(DataError, match="file a.txt line 3: not valid libsvm .*'x'"):
        read_channel("train", data_dir=tmp_path, content_type="text/libsvm")


def test_read_channel_parquet_label_first_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "train").mkdir()
    pq.write_table(pa.table({"y": [1, 0], "a": [0.5, 1.5], "b": [2.0, 3.0]}), tmp_path / "train" / "p.parquet")
    data = read_channel("train", data_dir=tmp_path, content_type="application/x-parquet")
    np.testing.assert_array_equal(data.labels, [1, 0])
    np.testing.assert_array_equal(data.features, [[0.5, 2], [1.5, 3]])


def test_read_channel_recordio_from_sdk_writer(tmp_path):
    common = pytest.importorskip("sagemaker.amazon.common")
    array = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    buf = io.BytesIO()
    common.write_numpy_to_dense_tensor(buf, array, np.arange(10, dtype=np.float32))
    _write(tmp_path / "train" / "part-0.pbr", buf.getvalue())
    data = read_channel("train", data_dir=tmp_path, content_type="application/x-recordio-protobuf")
    np.testing.assert_array_equal(data.features, array)
    np.testing.assert_array_equal(data.labels, np.arange(10))


def test_read_channel_recordio_without_labels_raises(tmp_path):
    _write(tmp_path / "train" / "x.rec", recordio.encode_dense(np.ones((2, 2), np.float32)))
    with pytest.raises(DataError, match="file x.rec: records carry no label"):
        read_channel("train", data_dir=tmp_path, content_type="application/x-recordio-protobuf")


def test_read_channel_pipe_mode_reads_epoch_zero_fifo(tmp_path):
    import threading

    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as stream:
            stream.write(b"1,2,3\n0,4,5\n")

    writer = threading.Thread(target=feed)
    writer.start()
    data = read_channel("train", data_dir=tmp_path, content_type="text/csv", input_mode="Pipe")
    writer.join()
    np.testing.assert_array_equal(data.features, [[2, 3], [4, 5]])


def test_read_channel_pipe_recordio_wrapped_csv_unwrapped(tmp_path):
    import threading

    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)
    payload = recordio.frame(b"1,2,3\n") + recordio.frame(b"0,4,5\n")

    def feed():
        with open(fifo, "wb") as stream:
            stream.write(payload)

    writer = threading.Thread(target=feed)
    writer.start()
    data = read_channel("train", data_dir=tmp_path, content_type="text/csv", input_mode="Pipe",
                        record_wrapper="RecordIO")
    writer.join()
    np.testing.assert_array_equal(data.labels, [1, 0])


def test_parse_payload_csv_and_libsvm_without_label():
    np.testing.assert_array_equal(parse_payload(b"1,2\n3,4\n", "text/csv"), [[1, 2], [3, 4]])
    features = parse_payload(b"0:1 2:3\n1:5\n", "text/libsvm")
    np.testing.assert_array_equal(features.toarray(), [[1, 0, 3], [0, 5, 0]])


def test_read_channel_arrow_csv_files_concatenated_as_table(tmp_path):
    _write(tmp_path / "train" / "a.csv", "1,0.5,2\n")
    _write(tmp_path / "train" / "b.csv", "0,1.5,3\n1,2.5,4\n")
    data = read_channel("train", data_dir=tmp_path, content_type="text/csv", arrow=True)
    assert data.num_rows == 3 and data.num_columns == 2 and data.is_arrow
    np.testing.assert_array_equal(data.dense_or_sparse(), [[0.5, 2], [1.5, 3], [2.5, 4]])
    np.testing.assert_array_equal(data.labels, [1, 0, 1])


def test_read_channel_csv_files_with_different_widths_raises(tmp_path):
    _write(tmp_path / "train" / "a.csv", "1,0.5,2\n")
    _write(tmp_path / "train" / "b.csv", "0,1.5\n")
    with pytest.raises(DataError, match="different numbers of columns"):
        read_channel("train", data_dir=tmp_path, content_type="text/csv")


def test_float32_columns_read_from_arrow_buffers_keep_values_and_nulls_across_chunks_and_slices():
    """content reads Arrow float32 columns from their buffers (pyarrow's to_numpy imports pandas): several
    chunks, a sliced chunk (non-zero offset, validity bits not byte-aligned) and nulls come out as to_numpy
    would give them, nulls as NaN."""
    import pyarrow as pa

    from opensage.algorithms.content import _float32_column

    values = np.arange(40, dtype=np.float32) / 4
    nulls = [None if i % 7 == 3 else float(v) for i, v in enumerate(values)]
    column = pa.chunked_array([pa.array(nulls[:11], pa.float32()), pa.array(nulls, pa.float32()).slice(13, 20),
                               pa.array(values[:5]), pa.array([], pa.float32())])
    got = _float32_column(column)
    expected = np.array([np.nan if v is None else v for v in nulls[:11] + nulls[13:33]] + list(values[:5]),
                        dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)  # NaN equals NaN here
    out = np.zeros((len(expected), 2), dtype=np.float32)
    _float32_column(column, out[:, 1])  # into a strided column of a matrix
    np.testing.assert_array_equal(out[:, 1], expected)
    assert not out[:, 0].any()


def test_reading_csv_channels_does_not_import_pandas(tmp_path):
    """A job reads its CSV channel (label, weights, features; or features only) without pandas: importing it cost
    every CSV job ~0.45 s (a zygote child has not imported it). (Parquet: the next test.)"""
    import subprocess
    import sys

    _write(tmp_path / "train" / "a.csv", "1,0.5,2,3\n0,,4,5\n")
    script = f"""
import sys
import numpy as np
from pathlib import Path
from opensage.algorithms.content import read_channel
a = read_channel("train", data_dir=Path({str(tmp_path)!r}), content_type="text/csv", csv_weights=True)
b = read_channel("train", data_dir=Path({str(tmp_path)!r}), content_type="text/csv", require_labels=False)
assert list(a.labels) == [1, 0] and list(a.weights[:1]) == [0.5] and np.isnan(a.weights[1]), a
assert b.features.shape == (2, 4) and b.features[1, 2] == 4, b
print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_reading_parquet_channels_and_requests_does_not_import_pandas(tmp_path):
    """Parquet channels (a path, and a whole file as Pipe mode reads it) and Parquet request bodies are read with
    ``ParquetFile.read``: ``pyarrow.parquet.read_table`` imports pandas (~0.45 s in a zygote child)."""
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "train").mkdir()
    pq.write_table(pa.table({"y": pa.array([1.0, 0.0]), "a": pa.array([2, 4]), "b": pa.array([3.5, 5.5])}),
                   tmp_path / "train" / "a.parquet")
    script = f"""
import sys
from pathlib import Path
from opensage.algorithms.content import Source, _read_parquet_source, parse_payload, read_channel
path = Path({str(tmp_path)!r}) / "train" / "a.parquet"
a = read_channel("train", data_dir=path.parent.parent, content_type="application/x-parquet")
assert list(a.labels) == [1, 0] and a.features.tolist() == [[2, 3.5], [4, 5.5]], a
b = _read_parquet_source("train", Source(name="a.parquet", payload=path.read_bytes()))
assert list(b.labels) == [1, 0] and b.features.tolist() == [[2, 3.5], [4, 5.5]], b
assert parse_payload(path.read_bytes(), "application/x-parquet").tolist() == [[1, 2, 3.5], [0, 4, 5.5]]
print("pandas" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
