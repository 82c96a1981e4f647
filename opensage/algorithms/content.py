"""Reading training channels and inference payloads for the built-in algorithms.

Supported content types (SageMaker's names): ``text/csv`` (label in the first column, no header; with
``csv_weights`` the second column is the instance weight), ``text/libsvm`` (the default when a channel has no
ContentType), ``application/x-parquet`` (label = first column) and ``application/x-recordio-protobuf``
(features under ``features["values"]``, dense or sparse; label under ``label["values"]``). Parameters such as
``text/csv;label_size=1`` are accepted; ``label_size=0`` (the unsupervised built-ins' CSV: every column is a
feature) and recordio-protobuf records without a label give ``labels=None`` where the caller allows it
(``require_labels=False``).

CSV is parsed by pyarrow's multithreaded reader straight into float32 columns; only when that fails is the
file re-scanned line by line to name the bad line. Errors are :class:`DataError` with a message that names the
channel, the file and (where it applies) the line.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

CSV = "csv"
LIBSVM = "libsvm"
PARQUET = "parquet"
RECORDIO = "recordio-protobuf"

_CONTENT_TYPES = {
    "text/csv": CSV, "csv": CSV, "text/x-csv": CSV,
    "text/libsvm": LIBSVM, "text/x-libsvm": LIBSVM, "libsvm": LIBSVM,
    "application/x-parquet": PARQUET, "parquet": PARQUET,
    "application/x-recordio-protobuf": RECORDIO, "recordio-protobuf": RECORDIO,
}
_GZIP_MAGIC = b"\x1f\x8b"


class DataError(ValueError):
    """Input data a user must fix (bad content type, malformed file, missing channel)."""


# ---------------------------------------------------------------------------------------------- paths


def sagemaker_base_dir() -> Path:
    """The SageMaker ``/opt/ml`` root (``SAGEMAKER_BASE_DIR`` relocates it)."""
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))


@dataclass(frozen=True)
class MlPaths:
    """The standard paths under the ``/opt/ml`` root."""

    root: Path

    @classmethod
    def from_env(cls) -> MlPaths:
        return cls(sagemaker_base_dir())

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    @property
    def inputdataconfig(self) -> Path:
        return self.root / "input" / "config" / "inputdataconfig.json"

    @property
    def resourceconfig(self) -> Path:
        return self.root / "input" / "config" / "resourceconfig.json"

    @property
    def data(self) -> Path:
        return self.root / "input" / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def failure(self) -> Path:
        return self.root / "output" / "failure"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"


def read_json(path: Path, default: Any) -> Any:
    """JSON content of ``path``, or ``default`` if the file does not exist."""
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name} is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------------------------- types


@dataclass
class ChannelData:
    """One channel's rows: features, labels, optional weights/qid.

    ``features`` is a dense float32 ndarray or a scipy CSR matrix; with ``arrow=True`` CSV and Parquet
    channels give a float32 ``pyarrow.Table`` instead (xgboost takes it without a row-major copy).
    """

    features: Any
    labels: np.ndarray | None
    weights: np.ndarray | None = None
    qid: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_columns(self) -> int:
        return int(self.features.shape[1])

    @property
    def is_arrow(self) -> bool:
        return _is_arrow_table(self.features)

    def dense_or_sparse(self) -> Any:
        """The features as an ndarray (Arrow tables converted) or the CSR matrix."""
        return _table_to_matrix(self.features, 0) if self.is_arrow else self.features


def _is_arrow_table(value: Any) -> bool:
    return type(value).__module__.startswith("pyarrow") and hasattr(value, "column_names")


def parse_content_type(content_type: str | None, *, default: str = LIBSVM) -> tuple[str, dict[str, str]]:
    """(format, parameters) for a MIME type such as ``text/csv;label_size=1``; DataError if unsupported."""
    if not content_type or not content_type.strip():
        return default, {}
    main, *raw_params = content_type.split(";")
    fmt = _CONTENT_TYPES.get(main.strip().lower())
    if fmt is None:
        raise DataError(
            f"Content type {content_type!r} is not supported; use text/csv, text/libsvm, "
            "application/x-parquet or application/x-recordio-protobuf.")
    params: dict[str, str] = {}
    for item in raw_params:
        key, _, value = item.partition("=")
        if key.strip():
            params[key.strip().lower()] = value.strip()
    return fmt, params


@dataclass(frozen=True)
class Source:
    """One input file (or a Pipe-mode stream already read into memory)."""

    name: str
    path: Path | None = None
    payload: bytes | None = None
    # (data_dir, channel) of a FastFile channel the platform is still downloading (runner.fastfile): the
    # file is read through ``fastfile.follow``, which waits for bytes and fails with the download's reason.
    streamed: tuple[Path, str] | None = None

    def open(self) -> BinaryIO:
        """The file's bytes as a sequential stream (following a streamed download)."""
        if self.streamed is None:
            return open(self.path, "rb")  # type: ignore[arg-type]  # noqa: SIM115 - the caller closes it
        from opensage.runner.fastfile import follow

        return follow(self.path, *self.streamed)  # type: ignore[arg-type]

    def read_bytes(self) -> bytes:
        if self.payload is not None:
            raw = self.payload
        elif self.streamed is not None:
            with self.open() as stream:
                raw = stream.read()
        else:
            raw = self.path.read_bytes()  # type: ignore[union-attr]
        return gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw

    def is_gzip(self) -> bool:
        if self.streamed is None:
            return self.path.suffix == ".gz"  # type: ignore[union-attr]
        with self.open() as stream:
            return stream.read(2) == _GZIP_MAGIC

    def iter_lines(self) -> Iterator[bytes]:
        return iter(io.BytesIO(self.read_bytes()))


# ---------------------------------------------------------------------------------------------- listing


def _is_skipped(name: str) -> bool:
    return name.startswith(".") or name.endswith(".amazon.manifest") or name.endswith(".sagemaker-ignore")


def list_files(directory: Path) -> list[Path]:
    """Data files of a File-mode channel, recursively, sorted; hidden files and manifests skipped."""
    files: list[Path] = []
    for root, dirs, names in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(Path(root) / n for n in sorted(names) if not _is_skipped(n))
    return [f for f in files if f.is_file()]


def _pipe_payload(fifo: Path, record_wrapped: bool) -> bytes:
    with open(fifo, "rb") as stream:
        data = stream.read()
    if record_wrapped:
        from opensage.algorithms import recordio

        data = b"".join(recordio.iter_records(data))
    return data


def channel_sources(channel: str, data_dir: Path, *, input_mode: str = "File",
                    record_wrapper: str | None = None, fmt: str = CSV) -> list[Source]:
    """The sources of a channel: its files in File/FastFile mode, or the epoch-0 FIFO in Pipe mode."""
    if input_mode == "Pipe":
        fifo = data_dir / f"{channel}_0"
        if not fifo.exists():
            return []
        wrapped = (record_wrapper or "None") == "RecordIO" and fmt != RECORDIO
        payload = _pipe_payload(fifo, wrapped)
        return [Source(name=fifo.name, payload=payload)] if payload else []
    directory = data_dir / channel
    if not directory.is_dir():
        return []
    from opensage.runner.fastfile import markers_dir

    if markers_dir(data_dir, channel).is_dir():  # still downloading: sizes are not known yet
        return [Source(name=str(p.relative_to(directory)), path=p, streamed=(data_dir, channel))
                for p in list_files(directory)]
    return [Source(name=str(p.relative_to(directory)), path=p) for p in list_files(directory)
            if p.stat().st_size > 0]


# ---------------------------------------------------------------------------------------------- csv


def _first_line(source: Source) -> bytes:
    if source.payload is not None:
        return source.read_bytes().split(b"\n", 1)[0]
    with source.open() as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if source.is_gzip() else raw
        return stream.readline()


def _csv_stream(source: Source) -> Any:
    import pyarrow as pa

    if source.payload is not None:
        return pa.BufferReader(source.read_bytes())
    if source.streamed is not None:  # parsed while it downloads
        stream = pa.PythonFile(source.open(), mode="r")
        return pa.CompressedInputStream(stream, "gzip") if source.is_gzip() else stream
    return pa.input_stream(str(source.path), compression="detect")


def _rescan_csv(channel: str, source: Source, n_cols: int) -> DataError:
    """Find the first bad line of a CSV source (only called after the fast reader failed)."""
    for number, raw in enumerate(source.iter_lines(), start=1):
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != n_cols:
            return DataError(f"{channel} channel: file {source.name} line {number}: expected {n_cols} columns "
                             f"(as on line 1), found {len(fields)}")
        for value in fields:
            text = value.strip()
            if text and text.lower() not in ("nan", "na", "null", "n/a", "-nan", "#n/a"):
                try:
                    float(text)
                except ValueError:
                    return DataError(f"{channel} channel: file {source.name} line {number}: "
                                     f"could not convert {text!r} to float")
    return DataError(f"{channel} channel: file {source.name}: could not be parsed as CSV")


@functools.cache
def _have_pyarrow() -> bool:
    """pyarrow is missing from some image environments (the xgboost 0.90 ones pin numpy 1.x, which today's
    pyarrow refuses): CSV then goes through numpy, slower but the same values."""
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def _numpy_csv(channel: str, source: Source, n_cols: int) -> np.ndarray:
    """A CSV source as a float32 matrix without pyarrow (empty fields are NaN)."""
    text = source.read_bytes().decode("utf-8", errors="replace")
    rows = [line for line in text.splitlines() if line.strip()]
    try:
        matrix = np.array([[float(v) if v.strip() else np.nan for v in row.split(",")] for row in rows],
                          dtype=np.float32)
    except ValueError:
        raise _rescan_csv(channel, source, n_cols) from None
    if matrix.ndim != 2 or matrix.shape[1] != n_cols:
        raise _rescan_csv(channel, source, n_cols)
    return matrix


def _float32_column(column: Any, out: np.ndarray | None = None) -> np.ndarray:
    """A float32 Arrow column as float32 numpy (nulls -> NaN), read from its buffers. Not ``to_numpy()``: pyarrow's
    conversions import pandas on their first use (~0.45 s and ~400 modules in each job: a zygote child, or a fresh
    process, has not imported it)."""
    import pyarrow as pa

    if out is None:
        out = np.empty(len(column), dtype=np.float32)
    if column.type != pa.float32():
        out[:] = column.to_numpy()
        return out
    pos = 0
    for chunk in column.chunks:
        n = len(chunk)
        validity, data = chunk.buffers()
        part = out[pos:pos + n]
        part[:] = np.frombuffer(data, dtype=np.float32, count=n, offset=chunk.offset * 4)
        if chunk.null_count:
            bits = np.unpackbits(np.frombuffer(validity, dtype=np.uint8), bitorder="little")
            part[bits[chunk.offset:chunk.offset + n] == 0] = np.nan
        pos += n
    return out


def _table_to_matrix(table: Any, first: int) -> np.ndarray:
    """Columns ``first..`` of a float32 Arrow table as a C-ordered float32 matrix (nulls -> NaN)."""
    n_cols = table.num_columns - first
    out = np.empty((table.num_rows, n_cols), dtype=np.float32)
    for j in range(n_cols):
        _float32_column(table.column(first + j), out[:, j])
    return out


def _read_csv_source(channel: str, source: Source, csv_weights: bool, arrow: bool = False,
                     label_size: int = 1) -> ChannelData:
    n_cols = len(_first_line(source).split(b","))
    if label_size == 0:
        return _read_unlabelled_csv(channel, source, n_cols)
    minimum = 3 if csv_weights else 2
    if n_cols < minimum:
        raise DataError(f"{channel} channel: file {source.name} line 1: found {n_cols} column(s); CSV needs the "
                        f"label{', the weight' if csv_weights else ''} and at least one feature column")
    if not _have_pyarrow():
        matrix = _numpy_csv(channel, source, n_cols)
        first = 2 if csv_weights else 1
        return ChannelData(np.ascontiguousarray(matrix[:, first:]), matrix[:, 0].copy(),
                           matrix[:, 1].copy() if csv_weights else None)
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(n_cols)]
    try:
        table = pacsv.read_csv(
            _csv_stream(source),
            read_options=pacsv.ReadOptions(column_names=names, block_size=4 << 20),
            parse_options=pacsv.ParseOptions(delimiter=","),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _rescan_csv(channel, source, n_cols) from None
    first = 2 if csv_weights else 1
    labels = _float32_column(table.column(0))
    weights = _float32_column(table.column(1)) if csv_weights else None
    return ChannelData(_features(table, first, arrow), labels, weights)


def _read_unlabelled_csv(channel: str, source: Source, n_cols: int) -> ChannelData:
    """``text/csv;label_size=0``: every column is a feature (unsupervised algorithms)."""
    if _have_pyarrow():
        import pyarrow as pa
        import pyarrow.csv as pacsv

        names = [f"c{i}" for i in range(n_cols)]
        try:
            table = pacsv.read_csv(
                _csv_stream(source), read_options=pacsv.ReadOptions(column_names=names, block_size=4 << 20),
                convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise _rescan_csv(channel, source, n_cols) from None
        return ChannelData(_table_to_matrix(table, 0), None)
    return ChannelData(np.ascontiguousarray(_numpy_csv(channel, source, n_cols)), None)


def _features(table: Any, first: int, arrow: bool) -> Any:
    return table.select(list(range(first, table.num_columns))) if arrow else _table_to_matrix(table, first)


# ---------------------------------------------------------------------------------------------- libsvm


def _parse_libsvm_line(line: str) -> tuple[float, float | None, int | None, list[tuple[int, float]]]:
    tokens = line.split()
    head = tokens[0]
    label_text, _, weight_text = head.partition(":")
    label = float(label_text)
    weight = float(weight_text) if weight_text else None
    qid = None
    pairs: list[tuple[int, float]] = []
    for token in tokens[1:]:
        if token.startswith("#"):
            break
        key, sep, value = token.partition(":")
        if not sep:
            raise ValueError(f"feature {token!r} is not index:value")
        if key == "qid":
            qid = int(value)
            continue
        index = int(key)
        if index < 0:
            raise ValueError(f"feature index {index} is negative")
        pairs.append((index, float(value)))
    return label, weight, qid, pairs


def _read_libsvm_slow(channel: str, source: Source) -> ChannelData:
    """Line-by-line libsvm parser: supports ``label:weight`` and names the first bad line."""
    import scipy.sparse as sp

    labels: list[float] = []
    weights: list[float] = []
    qids: list[int] = []
    indptr, indices, values = [0], [], []
    for number, raw in enumerate(source.iter_lines(), start=1):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line or line.startswith("#"):
            continue
        try:
            label, weight, qid, pairs = _parse_libsvm_line(line)
        except ValueError as exc:
            raise DataError(f"{channel} channel: file {source.name} line {number}: "
                            f"not valid libsvm ({_short(exc)})") from None
        labels.append(label)
        weights.append(1.0 if weight is None else weight)
        qids.append(0 if qid is None else qid)
        indices.extend(i for i, _ in pairs)
        values.extend(v for _, v in pairs)
        indptr.append(len(indices))
    n_cols = max(indices) + 1 if indices else 0
    matrix = sp.csr_matrix((np.array(values, np.float32), np.array(indices, np.int64), np.array(indptr)),
                           shape=(len(labels), n_cols))
    has_weights = any(w != 1.0 for w in weights)
    return ChannelData(matrix, np.array(labels, np.float32),
                       np.array(weights, np.float32) if has_weights else None,
                       np.array(qids, np.int64) if any(qids) else None)


def _short(exc: Exception) -> str:
    text = str(exc)
    if text.startswith("could not convert string to float: "):
        return "could not convert " + text.removeprefix("could not convert string to float: ") + " to float"
    if text.startswith("invalid literal for int() with base 10: "):
        return "bad feature index " + text.removeprefix("invalid literal for int() with base 10: ")
    return text


def _read_libsvm_source(channel: str, source: Source) -> ChannelData:
    from sklearn.datasets import load_svmlight_file

    try:
        features, labels, qid = load_svmlight_file(io.BytesIO(source.read_bytes()), dtype=np.float32,
                                                   zero_based=True, query_id=True)
    except (ValueError, TypeError, IndexError):
        return _read_libsvm_slow(channel, source)
    return ChannelData(features.tocsr(), labels.astype(np.float32), None,
                       qid.astype(np.int64) if qid.size and qid.any() else None)


# ---------------------------------------------------------------------------------------------- parquet / recordio


def _read_parquet_source(channel: str, source: Source, arrow: bool = False) -> ChannelData:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        whole = source.payload is not None or source.streamed is not None  # Parquet seeks: the whole file
        target = io.BytesIO(source.read_bytes()) if whole else str(source.path)
        table = pq.ParquetFile(target).read()  # not read_table: it imports pandas (~0.45 s a job)
        table = table.cast(pa.schema([pa.field(f.name, pa.float32()) for f in table.schema]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as exc:
        raise DataError(f"{channel} channel: file {source.name}: not readable as numeric Parquet ({exc})") from None
    if table.num_columns < 2:
        raise DataError(f"{channel} channel: file {source.name}: Parquet needs a label column and features")
    return ChannelData(_features(table, 1, arrow), _float32_column(table.column(0)))


def _read_recordio_source(channel: str, source: Source, require_labels: bool = True) -> ChannelData:
    from opensage.algorithms import recordio

    try:
        features, labels = recordio.decode_matrix(source.read_bytes())
    except recordio.RecordIOError as exc:
        raise DataError(f"{channel} channel: file {source.name}: {exc}") from None
    if labels is None and require_labels:
        raise DataError(f"{channel} channel: file {source.name}: records carry no label['values']")
    return ChannelData(features, labels)


def _read_recordio_files(channel: str, sources: list[Source], require_labels: bool) -> ChannelData | None:
    """Every row of a File-mode recordio-protobuf channel decoded straight into one float32 array, when each
    file is dense as the SDK writes it (``DenseChannel.of``); None otherwise (the caller reads file by file and
    concatenates, which also names the problem). The arrays are those of that path: a file whose records turn
    out to differ is decoded the general way into its rows. A streamed file (still downloading) is decoded
    block by block as it arrives: its final size is known before its bytes (``fastfile.final_size``), so the
    array is allocated up front."""
    from opensage.algorithms import recordio_dense
    from opensage.runner.channels import ChannelError

    try:
        dense = DenseChannel.of(channel, sources, require_labels)
        if dense is None:
            return None
        features = np.empty((dense.rows, dense.width), dtype=np.float32)
        labels = np.empty(dense.rows, dtype=np.float32) if dense.labelled else None
        start = 0
        for source, template, n in dense.plans:
            out = features[start:start + n]
            out_labels = None if labels is None else labels[start:start + n]
            if not recordio_dense.read_file_into(source.open(), template, out, out_labels):
                part = _read_recordio_source(channel, source, require_labels)
                if not _same_layout(part, out.shape, out_labels is not None):
                    return None
                out[...] = part.features
                if out_labels is not None:
                    out_labels[...] = part.labels
            start += n
    except ChannelError as exc:  # a streamed download failed: its reason is the job's
        raise DataError(str(exc)) from None
    return ChannelData(features, labels)


def _same_layout(part: ChannelData, shape: tuple[int, ...], labelled: bool) -> bool:
    return (isinstance(part.features, np.ndarray) and part.features.shape == shape
            and (part.labels is not None) == labelled)


class DenseChannel:
    """A File-mode recordio-protobuf channel whose files are all dense as the SDK writes them
    (``recordio_dense.FileTemplate``: the first record read, each file's size a whole number of equal frames;
    one width; all or none labelled): its shape is known before its rows are read, and ``blocks()`` decodes
    it a block of rows at a time, so an algorithm that needs one pass (PCA's XᵀX) never holds it whole and
    works while a streamed channel still downloads."""

    def __init__(self, channel: str, plans: list[tuple[Source, Any, int]], require_labels: bool) -> None:
        self.channel, self.plans, self.require_labels = channel, plans, require_labels
        self.rows = sum(n for _, _, n in plans)
        self.width, self.labelled = plans[0][1].width, plans[0][1].labelled

    @classmethod
    def of(cls, channel: str, sources: list[Source], require_labels: bool) -> DenseChannel | None:
        """None when a file is not so (or the channel is empty): read it with ``read_channel``. Waits for the
        final size of a streamed file that is not filled by ranges (``fastfile.final_size``)."""
        from opensage.algorithms import recordio_dense
        from opensage.runner.fastfile import final_size

        plans: list[tuple[Source, Any, int]] = []
        for source in sources:
            if source.path is None or source.payload is not None:
                return None
            size = (source.path.stat().st_size if source.streamed is None
                    else final_size(source.path, *source.streamed))
            with source.open() as stream:
                head = stream.read(min(size, 1 << 16))
            template = recordio_dense.FileTemplate.of(head)
            if template is None or size % template.stride:
                return None
            plans.append((source, template, size // template.stride))
        if not plans:
            return None
        first = plans[0][1]
        if any(t.width != first.width or t.labelled != first.labelled for _, t, _ in plans):
            return None
        if require_labels and not first.labelled:
            return None
        return cls(channel, plans, require_labels)

    def blocks(self, rows: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(features (m, width) float32, labels (m,) float32 or None) of consecutive rows, in file order, up to
        ``rows`` at a time (default: a read block's worth, ``recordio_dense.BLOCK_BYTES``); the arrays are
        reused: each is valid until the next block (the consumer may modify it). The values are those
        ``read_channel`` gives. DataError when a download fails or a file changes while read."""
        from opensage.runner.channels import ChannelError

        try:
            yield from self._blocks(rows)
        except ChannelError as exc:  # a streamed download failed: its reason is the job's
            raise DataError(str(exc)) from None

    def _blocks(self, rows: int | None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        from opensage.algorithms import recordio_dense

        capacity = rows or max(1, recordio_dense.BLOCK_BYTES // max(1, self.plans[0][1].stride))
        features = np.empty((capacity, self.width), dtype=np.float32)
        labels = np.empty(capacity, dtype=np.float32) if self.labelled else None
        filled = 0
        for source, template, n in self.plans:
            done = 0
            try:
                for start, block in recordio_dense.iter_blocks(source.open(), template.stride, n):
                    at = 0
                    while at < len(block):  # read blocks fill the buffer; it is handed out when full
                        m = min(len(block) - at, capacity - filled)
                        out = slice(filled, filled + m)
                        if not template.fill(block[at:at + m], features[out], None if labels is None else labels[out]):
                            raise recordio_dense.FileChanged
                        filled, at, done = filled + m, at + m, start + at + m
                        if filled == capacity:
                            yield features, labels
                            filled = 0
            except recordio_dense.FileChanged:
                # a record unlike record 0 (or the file changed): the rest of this file decoded the general way
                # (rows of it already in the buffer are kept: they are what that way gives)
                whole = _read_recordio_source(self.channel, source, self.require_labels)
                if not _same_layout(whole, (n, self.width), self.labelled):
                    raise DataError(f"{self.channel} channel: file {source.name} changed while it was read "
                                    f"or its records are not alike") from None
                if filled:
                    yield features[:filled], None if labels is None else labels[:filled]
                    filled = 0
                rest = np.asarray(whole.features, dtype=np.float32)
                rest_labels = None if whole.labels is None else np.asarray(whole.labels, dtype=np.float32)
                for at in range(done, n, capacity):
                    yield rest[at:at + capacity], None if rest_labels is None else rest_labels[at:at + capacity]
        if filled:
            yield features[:filled], None if labels is None else labels[:filled]


# ---------------------------------------------------------------------------------------------- combine


def _concat(channel: str, parts: list[ChannelData]) -> ChannelData:
    if len(parts) == 1:
        return parts[0]
    widths = {p.num_columns for p in parts}
    if all(p.is_arrow for p in parts) and len(widths) == 1:
        import pyarrow as pa

        tables = [p.features.rename_columns([f"f{i}" for i in range(p.num_columns)]) for p in parts]
        features: Any = pa.concat_tables(tables)
    elif any(hasattr(p.features, "tocsr") for p in parts):  # sparse (scipy imported only then: ~0.3 s cold)
        import scipy.sparse as sp

        width = max(p.features.shape[1] for p in parts)
        mats = [sp.csr_matrix(p.features) for p in parts]
        mats = [m if m.shape[1] == width else sp.csr_matrix((m.data, m.indices, m.indptr),
                                                            shape=(m.shape[0], width)) for m in mats]
        features = sp.vstack(mats, format="csr")
    else:
        if len(widths) > 1:
            raise DataError(f"{channel} channel: files have different numbers of columns ({sorted(widths)})")
        features = np.concatenate([p.dense_or_sparse() for p in parts])
    if any(p.labels is None for p in parts):
        if not all(p.labels is None for p in parts):
            raise DataError(f"{channel} channel: some files have labels and some do not")
        labels = None
    else:
        labels = np.concatenate([p.labels for p in parts])
    weights = None
    if any(p.weights is not None for p in parts):
        weights = np.concatenate([p.weights if p.weights is not None else np.ones(p.num_rows, np.float32)
                                  for p in parts])
    qid = None
    if any(p.qid is not None for p in parts):
        qid = np.concatenate([p.qid if p.qid is not None else np.zeros(p.num_rows, np.int64) for p in parts])
    return ChannelData(features, labels, weights, qid)


def _empty_stream(source: Source) -> bool:
    """A streamed file that downloaded empty (a plain empty file is never listed: ``channel_sources``)."""
    if source.streamed is None:
        return False
    with source.open() as stream:
        return not stream.read(1)


def read_source(channel: str, source: Source, fmt: str, *, csv_weights: bool = False,
                arrow: bool = False, label_size: int = 1, require_labels: bool = True) -> ChannelData:
    """Rows of one source in format ``fmt``."""
    if fmt == CSV:
        return _read_csv_source(channel, source, csv_weights, arrow, label_size)
    if fmt == LIBSVM:
        return _read_libsvm_source(channel, source)
    if fmt == PARQUET:
        return _read_parquet_source(channel, source, arrow)
    if fmt == RECORDIO:
        return _read_recordio_source(channel, source, require_labels)
    raise DataError(f"{channel} channel: unsupported format {fmt!r}")


def read_channel(channel: str, *, data_dir: Path | None = None, content_type: str | None = None,
                 input_mode: str = "File", record_wrapper: str | None = None,
                 csv_weights: bool = False, arrow: bool = False, default_format: str = LIBSVM,
                 require_labels: bool = True) -> ChannelData | None:
    """Every row of a channel (files concatenated in sorted order); None if it has no data.

    ``arrow=True`` lets CSV/Parquet features stay a float32 ``pyarrow.Table`` (see ChannelData).
    ``require_labels=False`` (unsupervised algorithms) allows ``text/csv;label_size=0``, which is then also
    the CSV default, and recordio-protobuf records without a label.
    """
    fmt, params = parse_content_type(content_type, default=default_format)
    allowed = ("0", "1") if not require_labels else ("1",)
    label_size = params.get("label_size", "1" if require_labels else "0")
    if fmt == CSV and label_size not in allowed:
        raise DataError(f"{channel} channel: text/csv label_size must be {' or '.join(allowed)}, "
                        f"got {label_size!r}")
    data_dir = data_dir if data_dir is not None else MlPaths.from_env().data
    sources = channel_sources(channel, data_dir, input_mode=input_mode, record_wrapper=record_wrapper, fmt=fmt)
    if fmt == RECORDIO and sources:
        whole = _read_recordio_files(channel, sources, require_labels)
        if whole is not None:
            return whole
    from opensage.runner.channels import ChannelError

    try:
        parts = [read_source(channel, s, fmt, csv_weights=csv_weights, arrow=arrow, label_size=int(label_size),
                             require_labels=require_labels) for s in sources if not _empty_stream(s)]
    except ChannelError as exc:  # a streamed download failed: its reason is the job's
        raise DataError(str(exc)) from None
    parts = [p for p in parts if p.num_rows]
    return _concat(channel, parts) if parts else None


# ---------------------------------------------------------------------------------------------- payloads


def _payload_csv(payload: bytes) -> np.ndarray:
    """Parsed straight from the request bytes (a decode/strip/encode round trip cost ~0.3 s per GB)."""
    stripped = payload.strip()
    if not stripped:
        raise DataError("text/csv payload is empty")
    end = stripped.find(b"\n")
    n_cols = (stripped if end < 0 else stripped[:end]).count(b",") + 1
    if not _have_pyarrow():
        return _numpy_csv("request", Source(name="payload", payload=stripped), n_cols)
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(n_cols)]
    try:
        table = pacsv.read_csv(
            pa.BufferReader(stripped),
            read_options=pacsv.ReadOptions(column_names=names),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float32())))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise _rescan_csv("request", Source(name="payload", payload=stripped), n_cols) from None
    return _table_to_matrix(table, 0)


def _payload_libsvm(text: str) -> Any:
    """libsvm rows; the leading label is optional in requests (a row may start with ``index:value``)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = ["0 " + ln if ":" in ln.split()[0] else ln for ln in lines]
    body = ("\n".join(lines) + "\n").encode()
    return _read_libsvm_source("request", Source(name="payload", payload=body)).features


def parse_payload(payload: bytes, content_type: str | None) -> Any:
    """Features of an inference request body (CSV rows have no label)."""
    fmt, _ = parse_content_type(content_type, default=CSV)
    if fmt == CSV:
        return _payload_csv(bytes(payload))
    if fmt == LIBSVM:
        return _payload_libsvm(payload.decode("utf-8"))
    if fmt == RECORDIO:
        from opensage.algorithms import recordio

        try:
            return recordio.decode_matrix(payload)[0]
        except recordio.RecordIOError as exc:
            raise DataError(f"request: {exc}") from None
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.ParquetFile(io.BytesIO(payload)).read()  # read_table would import pandas
    return _table_to_matrix(table.cast(pa.schema([(f.name, pa.float32()) for f in table.schema])), 0)
