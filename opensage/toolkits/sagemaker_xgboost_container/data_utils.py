"""``get_dmatrix`` as the container's ``data_utils`` has it: a channel directory (or file, or list of them) in
one content type -> an ``xgboost.DMatrix`` (label first; with ``csv_weights`` the weight second), or None when
there is no data. CSV, LibSVM, Parquet and RecordIO-protobuf, read by the built-in algorithm's readers
(``opensage.algorithms.content``), which also take the container's short names (``"libsvm"``, ``"csv"``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from opensage.algorithms import content

# The container's names for its content types (sagemaker_xgboost_container/data_utils.py).
CSV, LIBSVM, PARQUET, RECORDIO_PROTOBUF = "csv", "libsvm", "parquet", "recordio-protobuf"
VALID_CONTENT_TYPES = ("text/csv", "text/libsvm", "text/x-libsvm", "application/x-parquet",
                       "application/x-recordio-protobuf", CSV, LIBSVM, PARQUET, RECORDIO_PROTOBUF)


def get_content_type(content_type: str | None) -> str:
    """The container's short name of a content type (``text/csv;label_size=1`` -> ``csv``); libsvm by default."""
    fmt, _ = content.parse_content_type(content_type)
    return {content.CSV: CSV, content.LIBSVM: LIBSVM, content.PARQUET: PARQUET,
            content.RECORDIO: RECORDIO_PROTOBUF}[fmt]


def _read(path: Path, content_type: str, csv_weights: bool, is_pipe: bool) -> content.ChannelData | None:
    if is_pipe or path.is_dir():
        return content.read_channel(path.name, data_dir=path.parent, content_type=content_type,
                                    input_mode="Pipe" if is_pipe else "File", csv_weights=csv_weights)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    fmt, params = content.parse_content_type(content_type)
    data = content.read_source(path.parent.name, content.Source(name=path.name, path=path), fmt,
                               csv_weights=csv_weights, label_size=int(params.get("label_size", "1")))
    return data if data.num_rows else None


def get_dmatrix(data_path: str | os.PathLike[str] | list[Any] | None, content_type: str, csv_weights: int = 0,
                is_pipe: bool = False) -> Any:
    """A DMatrix of every row under ``data_path`` (files in sorted order), or None when it has none."""
    from opensage.algorithms.xgboost.train import build_dmatrix

    if data_path is None:
        return None
    paths = [Path(p) for p in (data_path if isinstance(data_path, list | tuple) else [data_path])]
    parts = [part for p in paths if (part := _read(p, content_type, bool(csv_weights), is_pipe)) is not None]
    if not parts:
        return None
    data = content._concat("data", parts)  # noqa: SLF001 - the readers' own concatenation, not a copy of it
    return build_dmatrix(data, {})
