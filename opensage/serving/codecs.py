"""Encoders and decoders of the sagemaker-inference toolkit (``decoder.decode`` / ``encoder.encode``).

Decoders turn a request body into a numpy array: ``application/json`` (``np.array(json.loads(...))``),
``text/csv`` (rows x columns; a single row stays 2-D, unlike the toolkit's ``squeeze`` which hands
estimators a 1-D array they refuse), ``application/x-npy`` (``np.load``) and ``application/x-npz`` (a
scipy sparse matrix saved with ``save_npz``, or the first array of an ``np.savez`` archive). Encoders
turn a prediction into bytes: json (``tolist`` for arrays and tensors), csv (one row per line, so a 1-D
prediction is one value per line) and npy.

Unsupported types raise ``UnsupportedFormatError`` (HTTP 415 for a request body, 406 for an Accept).
"""

from __future__ import annotations

import io
import json
from typing import Any

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
OCTET_STREAM = "application/octet-stream"
ANY = "*/*"
UTF8_TYPES = (JSON, CSV)  # bodies of these types reach input_fn as str, as in the toolkit
DECODABLE = (JSON, CSV, NPY, NPZ)
ENCODABLE = (JSON, CSV, NPY)


class InferenceToolkitError(Exception):
    """An error with an HTTP status, as the toolkit's ``BaseInferenceToolkitError``."""

    def __init__(self, status_code: int, message: str, phrase: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.phrase = phrase or message


class UnsupportedFormatError(InferenceToolkitError):
    """A content type (415) or accept type (406) the handler cannot process."""

    def __init__(self, media_type: str | None, *, status_code: int = 415, supported: tuple[str, ...] = ()) -> None:
        what = "Content type" if status_code == 415 else "Accept type"
        hint = f" Supported: {', '.join(supported)}." if supported else ""
        super().__init__(status_code, f"{what} {media_type!r} is not supported by this framework.{hint}")


def media_type(value: str | None) -> str:
    """``text/csv; charset=utf-8`` -> ``text/csv`` (lower case, no parameters)."""
    return (value or "").split(";", 1)[0].strip().lower()


def parse_accept(accept: str | None, default: str) -> list[str]:
    """Media types of an Accept header in order; absent or ``*/*`` means ``default``."""
    types = [media_type(part) for part in (accept or "").split(",")]
    types = [default if t in ("", ANY) else t for t in types]
    return types or [default]


# ------------------------------------------------------------------------------------------- decoders
def _to_text(body: bytes | str) -> str:
    return body.decode("utf-8") if isinstance(body, bytes | bytearray | memoryview) else body


def json_to_numpy(body: bytes | str, dtype: Any = None) -> Any:
    import numpy as np

    try:
        return np.array(json.loads(_to_text(body)), dtype=dtype)
    except json.JSONDecodeError as exc:
        raise InferenceToolkitError(400, f"application/json body is not valid JSON: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InferenceToolkitError(400, f"application/json body is not a numeric array: {exc}") from None


def csv_to_numpy(body: bytes | str, dtype: Any = None) -> Any:
    """Rows x columns; cells must be numbers when ``dtype`` is numeric."""
    import numpy as np

    text = _to_text(body).strip()
    if not text:
        raise InferenceToolkitError(400, "text/csv body is empty: send one row of comma-separated values per line.")
    rows = [line.split(",") for line in text.splitlines() if line.strip()]
    widths = {len(row) for row in rows}
    if len(widths) != 1:
        raise InferenceToolkitError(400, f"text/csv rows have different numbers of columns: {sorted(widths)}.")
    try:
        return np.array([[cell.strip() for cell in row] for row in rows]).astype(dtype)
    except ValueError as exc:
        raise InferenceToolkitError(400, f"text/csv body has a non-numeric value: {exc}") from None


def npy_to_numpy(body: bytes | str) -> Any:
    import numpy as np

    try:
        return np.load(io.BytesIO(_as_bytes(body)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InferenceToolkitError(400, f"application/x-npy body is not a .npy array: {exc}") from None


def npz_to_array(body: bytes | str) -> Any:
    """A scipy sparse matrix (``save_npz``) or the first array of ``np.savez``."""
    import numpy as np

    data = _as_bytes(body)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            if "format" in archive.files and "shape" in archive.files:
                import scipy.sparse

                return scipy.sparse.load_npz(io.BytesIO(data))
            if not archive.files:
                raise InferenceToolkitError(400, "application/x-npz body holds no arrays.")
            return archive[archive.files[0]]
    except (ValueError, OSError, EOFError) as exc:
        raise InferenceToolkitError(400, f"application/x-npz body is not an .npz archive: {exc}") from None


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def decode(body: bytes | str, content_type: str | None, dtype: Any = None) -> Any:
    """The toolkit's ``decoder.decode``: a numpy array (or sparse matrix) for a supported type."""
    kind = media_type(content_type)
    if kind == JSON:
        return json_to_numpy(body, dtype)
    if kind == CSV:
        return csv_to_numpy(body, dtype)
    if kind == NPY:
        return npy_to_numpy(body)
    if kind == NPZ:
        return npz_to_array(body)
    raise UnsupportedFormatError(content_type, status_code=415, supported=DECODABLE)


# ------------------------------------------------------------------------------------------- encoders
def _plain(value: Any) -> Any:
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    if hasattr(value, "toarray"):  # scipy sparse
        value = value.toarray()
    return value


def array_to_json(value: Any) -> bytes:
    def default(obj: Any) -> Any:
        obj = _plain(obj)
        if hasattr(obj, "tolist"):
            return obj.tolist()
        raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")

    return json.dumps(_plain(value), default=default).encode("utf-8")


def array_to_csv(value: Any) -> bytes:
    """One row per line; a 1-D prediction is one value per line (``np.savetxt``)."""
    import numpy as np

    array = np.asarray(_plain(value))
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim > 2:
        raise InferenceToolkitError(500, f"cannot encode a {array.ndim}-D prediction as text/csv; "
                                         f"return a 1-D or 2-D array, or use application/json.")
    stream = io.StringIO()
    np.savetxt(stream, array, delimiter=",", fmt="%s")
    return stream.getvalue().encode("utf-8")


def array_to_npy(value: Any) -> bytes:
    import numpy as np

    stream = io.BytesIO()
    np.save(stream, np.asarray(_plain(value)), allow_pickle=False)
    return stream.getvalue()


def encode(value: Any, accept: str) -> bytes:
    """The toolkit's ``encoder.encode`` for one media type."""
    kind = media_type(accept)
    if kind == JSON:
        return array_to_json(value)
    if kind == CSV:
        return array_to_csv(value)
    if kind == NPY:
        return array_to_npy(value)
    raise UnsupportedFormatError(accept, status_code=406, supported=ENCODABLE)


def encode_first_supported(value: Any, accept: str | None, default: str) -> tuple[bytes, str]:
    """Encode for the first Accept media type that has an encoder; 406 if none has."""
    types = parse_accept(accept, default)
    for kind in types:
        if kind in ENCODABLE:
            return encode(value, kind), kind
    raise UnsupportedFormatError(accept, status_code=406, supported=ENCODABLE)
