"""Data formats shared by SageMaker's first-party built-ins (linear-learner, kmeans, pca, ...).

One module for what every 1P algorithm reads and writes, built on ``recordio.py`` (RecordIO framing and the
``aialgs.data.Record`` protobuf) and ``content.py`` (channels, CSV, File / Pipe mode):

* **RecordIO-protobuf, byte-compatible with the SDK** — ``write_numpy_to_dense_tensor`` /
  ``write_spmatrix_to_sparse_tensor`` / ``read_records`` take the same arguments as
  ``sagemaker.amazon.common``'s and write the same bytes (float32 / float64 / int tensors, label, sparse
  keys + shape); ``records_to_arrays`` turns Records back into (features, labels).
* **Training channels** — ``read_training_channel``: recordio-protobuf (the default when a channel has no
  ContentType, as ``record_set()`` sends none), ``text/csv`` (label first for supervised algorithms;
  ``label_size=0``, the unsupervised default, means every column is a feature), File mode (files in sorted
  order; ``ManifestFile`` shards as the platform downloads them, ``.amazon.manifest`` skipped) and Pipe mode
  (the ``<channel>_0`` FIFO; RecordIO-wrapped CSV unwrapped).
* **Inference** — ``parse_request`` reads ``text/csv``, ``application/json`` (``{"instances": [{"features":
  [...]}, {"data": {"features": {"values": [...], "keys": [...], "shape": [n]}}}]}``, a single instance, or
  plain rows), ``application/jsonlines`` (one instance per line) and ``application/x-recordio-protobuf``
  (dense or sparse); ``choose_accept`` + ``encode_response`` write JSON (``{"predictions": [...]}``), JSON
  Lines, recordio-protobuf (``label[<name>]`` per record) or CSV.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from opensage.algorithms import content, recordio
from opensage.algorithms.content import DataError

RECORDIO_TYPE = "application/x-recordio-protobuf"
CSV_TYPE = "text/csv"
JSON_TYPE = "application/json"
JSONLINES_TYPE = "application/jsonlines"
_JSONLINES_ALIASES = ("application/jsonlines", "application/json-lines", "application/x-jsonlines",
                      "application/jsonl")
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"


class InferenceError(ValueError):
    """A request the model cannot answer; ``status`` is the HTTP status the model server returns."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------ SDK-compatible I/O


def _sdk_dtype_check(dtype: np.dtype) -> None:
    """The SDK accepts exactly int (int64), float (float64) and float32 arrays; so do we (same bytes)."""
    if dtype not in (np.dtype(int), np.dtype(float), np.dtype("float32")):
        raise ValueError(f"Unsupported dtype {dtype} on array")


def _check_labels(array_shape: tuple[int, ...], labels: np.ndarray | None) -> None:
    if labels is None:
        return
    if labels.ndim != 1:
        raise ValueError("Labels must be a Vector")
    if labels.shape[0] not in array_shape:
        raise ValueError(f"Label shape {labels.shape} not compatible with array shape {array_shape}")
    _sdk_dtype_check(labels.dtype)


def write_numpy_to_dense_tensor(file: BinaryIO, array: np.ndarray, labels: np.ndarray | None = None) -> None:
    """One dense Record per row of ``array`` (label[``values``] = labels[i]), as the SDK's function writes."""
    if array.ndim != 2:
        raise ValueError("Array must be a Matrix")
    _check_labels(array.shape, labels)
    _sdk_dtype_check(array.dtype)
    file.write(recordio.encode_dense(array, labels))


def write_spmatrix_to_sparse_tensor(file: BinaryIO, array: Any, labels: np.ndarray | None = None) -> None:
    """One sparse Record (values, keys, shape=[n_cols]) per row of a scipy sparse matrix, as the SDK writes."""
    import scipy.sparse as sp

    if not sp.issparse(array):
        raise TypeError("Array must be sparse")
    if len(array.shape) != 2:
        raise ValueError("Array must be a Matrix")
    _check_labels(array.shape, labels)
    _sdk_dtype_check(array.dtype)
    file.write(recordio.encode_sparse(array, labels))


def read_records(file: BinaryIO | bytes) -> list[Any]:
    """Every ``Record`` of a RecordIO stream (a file object or bytes), like the SDK's ``read_records``."""
    data = file if isinstance(file, (bytes, bytearray, memoryview)) else file.read()
    return recordio.read_records(data)


def records_to_arrays(records: list[Any], dtype: Any = np.float32) -> tuple[Any, np.ndarray | None]:
    """(features, labels) of parsed Records: dense ndarray, or CSR when any record is sparse."""
    return recordio.records_to_matrix(records, dtype=dtype)


# ---------------------------------------------------------------------------------------- training data


@dataclass
class Dataset:
    """A channel's rows: float32 features (ndarray or CSR) and labels (None for unlabelled data)."""

    features: Any
    labels: np.ndarray | None

    @property
    def num_rows(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_columns(self) -> int:
        return int(self.features.shape[1])

    @property
    def is_sparse(self) -> bool:
        return hasattr(self.features, "tocsr")

    def dense(self) -> np.ndarray:
        """Features as a C-ordered float32 ndarray (sparse matrices densified)."""
        if self.is_sparse:
            return np.asarray(self.features.toarray(), dtype=np.float32)
        return np.ascontiguousarray(self.features, dtype=np.float32)


def read_training_channel(channel: str, data_dir: Path, config: Mapping[str, Any] | None, *,
                          supervised: bool, supported: Sequence[str] = (RECORDIO_TYPE, CSV_TYPE),
                          ) -> Dataset | None:
    """A channel's data as the 1P algorithms read it, or None when it has no data.

    ``config`` is the channel's entry of ``inputdataconfig.json`` (ContentType, TrainingInputMode,
    RecordWrapperType). A missing ContentType means recordio-protobuf. DataError names the channel.
    """
    config = dict(config or {})
    content_type = config.get("ContentType") or RECORDIO_TYPE
    base = content_type.split(";")[0].strip().lower()
    if base not in supported:
        raise DataError(f"Channel '{channel}': content type {content_type!r} is not supported by this "
                        f"algorithm; use one of {', '.join(supported)}.")
    data = content.read_channel(channel, data_dir=data_dir, content_type=content_type,
                                input_mode=config.get("TrainingInputMode") or "File",
                                record_wrapper=config.get("RecordWrapperType"), default_format=content.RECORDIO,
                                require_labels=supervised)
    if data is None:
        return None
    features = data.features
    if hasattr(features, "tocsr"):
        features = features.tocsr().astype(np.float32)
    else:
        features = np.ascontiguousarray(data.dense_or_sparse(), dtype=np.float32)
    labels = None if data.labels is None else np.asarray(data.labels, dtype=np.float32)
    if supervised and labels is None:
        raise DataError(f"Channel '{channel}': the records carry no label (label['values'] for "
                        f"recordio-protobuf, the first column for text/csv).")
    return Dataset(features, labels)


def dense_training_channel(channel: str, data_dir: Path, config: Mapping[str, Any] | None, *,
                           supervised: bool) -> content.DenseChannel | None:
    """The channel as ``content.DenseChannel`` (its shape known, its rows read a block at a time) when it is
    File- or FastFile-mode recordio-protobuf with every file dense as the SDK writes it; None otherwise
    (read it with ``read_training_channel``, which also names any problem)."""
    config = dict(config or {})
    content_type = config.get("ContentType") or RECORDIO_TYPE
    if content_type.split(";")[0].strip().lower() != RECORDIO_TYPE:
        return None
    mode = config.get("TrainingInputMode") or "File"
    if mode == "Pipe":
        return None
    sources = content.channel_sources(channel, data_dir, input_mode=mode,
                                      record_wrapper=config.get("RecordWrapperType"), fmt=content.RECORDIO)
    from opensage.runner.channels import ChannelError

    try:
        return content.DenseChannel.of(channel, sources, require_labels=supervised)
    except ChannelError as exc:  # a streamed download failed: its reason is the job's
        raise DataError(str(exc)) from None


# ---------------------------------------------------------------------------------------- inference in


def media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _sparse_instance(spec: Mapping[str, Any]) -> tuple[list[int], list[float], int | None]:
    values = [float(v) for v in spec.get("values") or []]
    keys = [int(k) for k in spec.get("keys") or []]
    if len(keys) != len(values):
        raise InferenceError(f"a sparse instance has {len(keys)} keys but {len(values)} values")
    shape = spec.get("shape")
    return keys, values, int(shape[0]) if shape else None


def _instance_features(instance: Any) -> Any:
    """One instance: a list of numbers, ``{"features": [...]}`` or ``{"data": {"features": {values, keys,
    shape}}}``; returns a list (dense) or a (keys, values, width) tuple (sparse)."""
    if isinstance(instance, list):
        return instance
    if not isinstance(instance, dict):
        raise InferenceError(f"an instance must be an object or a list of numbers, not {type(instance).__name__}")
    if "features" in instance:
        features = instance["features"]
    elif isinstance(instance.get("data"), dict) and "features" in instance["data"]:
        features = instance["data"]["features"]
    else:
        raise InferenceError('an instance needs "features" (a list of numbers) or '
                             '"data": {"features": {"values": [...], "keys": [...], "shape": [n]}}')
    if isinstance(features, dict):
        if features.get("keys"):
            return _sparse_instance(features)
        return list(features.get("values") or [])
    if not isinstance(features, list):
        raise InferenceError('"features" must be a list of numbers')
    return features


def _rows_to_matrix(rows: list[Any]) -> Any:
    if not rows:
        raise InferenceError("the request has no instances")
    if not any(isinstance(r, tuple) for r in rows):
        try:
            matrix = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise InferenceError("instances must be lists of numbers of the same length") from None
        if matrix.ndim != 2:
            raise InferenceError("instances must be lists of numbers of the same length")
        return matrix
    import scipy.sparse as sp

    indptr, keys, values, width = [0], [], [], 0
    for row in rows:
        if isinstance(row, tuple):
            row_keys, row_values, row_width = row
        else:
            row_keys, row_values, row_width = list(range(len(row))), [float(v) for v in row], len(row)
        keys.extend(row_keys)
        values.extend(row_values)
        width = max(width, row_width or 0, max(row_keys, default=-1) + 1)
        indptr.append(len(keys))
    return sp.csr_matrix((np.asarray(values, np.float32), np.asarray(keys, np.int64), np.asarray(indptr)),
                         shape=(len(rows), width))


def _parse_json(body: bytes) -> Any:
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InferenceError(f"the application/json body is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise InferenceError('"instances" must be a list')
        return _rows_to_matrix([_instance_features(i) for i in instances])
    if isinstance(doc, dict):
        return _rows_to_matrix([_instance_features(doc)])
    if isinstance(doc, list) and doc and all(isinstance(v, (int, float)) for v in doc):
        return _rows_to_matrix([doc])
    if isinstance(doc, list):
        return _rows_to_matrix([_instance_features(i) for i in doc])
    raise InferenceError('the JSON body must be {"instances": [...]}, one instance, or a list of rows')


def _parse_jsonlines(body: bytes) -> Any:
    rows = []
    for number, line in enumerate(body.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(_instance_features(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InferenceError(f"line {number} of the application/jsonlines body is not JSON: {exc}") from None
    return _rows_to_matrix(rows)


def parse_request(body: bytes, content_type: str | None) -> Any:
    """Features of an inference request (float32 ndarray, or CSR for sparse input). No label column."""
    kind = media_type(content_type) or CSV_TYPE
    try:
        if kind in ("text/csv", "text/x-csv"):
            return content.parse_payload(bytes(body), CSV_TYPE)
        if kind == JSON_TYPE:
            return _parse_json(bytes(body))
        if kind in _JSONLINES_ALIASES:
            return _parse_jsonlines(bytes(body))
        if kind == RECORDIO_TYPE:
            return recordio.decode_matrix(bytes(body))[0]
    except (DataError, recordio.RecordIOError) as exc:
        raise InferenceError(str(exc)) from None
    raise InferenceError(f"Content type {content_type!r} is not supported; use {CSV_TYPE}, {JSON_TYPE}, "
                         f"{JSONLINES_TYPE} or {RECORDIO_TYPE}.", status=415)


def fit_width(features: Any, feature_dim: int) -> Any:
    """Check a request's width against the model's feature_dim (sparse rows may omit trailing columns)."""
    width = int(features.shape[1])
    if hasattr(features, "tocsr") and width <= feature_dim:
        features = features.tocsr()
        if width < feature_dim:
            features.resize((features.shape[0], feature_dim))
        return features
    if width != feature_dim:
        raise InferenceError(f"each instance must have {feature_dim} features (the model's feature_dim); "
                             f"the request has {width}")
    if features.shape[0] == 0:
        raise InferenceError("the request has no instances")
    return features


# ---------------------------------------------------------------------------------------- inference out



def parse_word_counts(payload: bytes, content_type: str | None, feature_dim: int, algorithm: str) -> Any:
    """A topic model's request (LDA, NTM): documents as non-negative word counts over the vocabulary."""
    import numpy as np

    features = fit_width(parse_request(payload, content_type), feature_dim)
    values = features.data if hasattr(features, "tocsr") else features
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise InferenceError(f"{algorithm} documents are non-negative word counts (finite numbers)")
    return features

def choose_accept(accept: str | None, supported: Sequence[str], default: str = JSON_TYPE) -> tuple[str, dict[str, str]]:
    """(media type, parameters) to answer with: the first supported type of Accept; absent or ``*/*`` is
    ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` or ``default``. Unsupported → InferenceError 406."""
    for option in (accept or "").split(","):
        base = media_type(option)
        if base in ("", "*/*"):
            chosen = os.environ.get(DEFAULT_ACCEPT_ENV, default)
            return (chosen if media_type(chosen) in supported else default), {}
        if base in _JSONLINES_ALIASES:
            base = JSONLINES_TYPE
        if base in supported:
            params = {}
            for item in option.split(";")[1:]:
                key, _, value = item.partition("=")
                params[key.strip().lower()] = value.strip().lower()
            return base, params
    raise InferenceError(f"Accept {accept!r} is not supported; use one of {', '.join(supported)}.", status=406)


def _json_value(value: Any, as_int: bool) -> Any:
    if isinstance(value, np.ndarray):
        return [int(v) for v in value] if as_int else [float(v) for v in value]
    return int(value) if as_int else float(value)


def per_record(outputs: Mapping[str, np.ndarray], int_keys: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Rows of JSON objects from column outputs (vectors stay lists)."""
    as_int = set(int_keys)
    names = list(outputs)
    n_rows = len(next(iter(outputs.values()))) if outputs else 0
    return [{name: _json_value(outputs[name][i], name in as_int) for name in names} for i in range(n_rows)]


def encode_response(outputs: Mapping[str, np.ndarray], accept: str, *, json_key: str = "predictions",
                    int_keys: Iterable[str] = (), csv_columns: Sequence[str] | None = None) -> bytes:
    """Serialize per-record outputs for ``accept`` (one of the supported types ``choose_accept`` chose)."""
    if accept == RECORDIO_TYPE:
        return recordio.encode_label_records(outputs)
    if accept == JSON_TYPE:
        return json.dumps({json_key: per_record(outputs, int_keys)}).encode()
    if accept == JSONLINES_TYPE:
        return "".join(json.dumps(row) + "\n" for row in per_record(outputs, int_keys)).encode()
    if accept == CSV_TYPE and csv_columns:
        buffer = io.StringIO()
        columns = [np.asarray(outputs[name]) for name in csv_columns]
        for i in range(len(columns[0])):
            buffer.write(",".join(_csv_cell(col[i]) for col in columns) + "\n")
        return buffer.getvalue().encode()
    raise InferenceError(f"Accept {accept!r} is not supported.", status=406)


def _csv_cell(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return ",".join(repr(float(v)) for v in value)
    return repr(float(value))
