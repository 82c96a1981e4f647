"""The sagemaker-inference toolkit's encoders/decoders, and handler-function arity checks."""

from __future__ import annotations

import io

import numpy as np
import pytest

from opensage.serving import codecs
from opensage.serving.handlers import Context, ModelLoadError, _Bound, error_response


def test_decode_csv_single_row_stays_two_dimensional():
    array = codecs.decode("1,2,3\n", "text/csv", dtype=np.float32)
    assert array.shape == (1, 3) and array.dtype == np.float32


def test_decode_json_with_charset_parameter_returns_array():
    assert codecs.decode(b"[[1, 2], [3, 4]]", "application/json; charset=utf-8").tolist() == [[1, 2], [3, 4]]


def test_decode_npy_and_npz_round_trip():
    buffer = io.BytesIO()
    np.save(buffer, np.arange(6).reshape(2, 3))
    assert codecs.decode(buffer.getvalue(), "application/x-npy").tolist() == [[0, 1, 2], [3, 4, 5]]
    import scipy.sparse

    sparse = io.BytesIO()
    scipy.sparse.save_npz(sparse, scipy.sparse.csr_matrix(np.eye(3)))
    assert codecs.decode(sparse.getvalue(), "application/x-npz").toarray().tolist() == np.eye(3).tolist()


def test_decode_unsupported_type_raises_415_naming_supported():
    with pytest.raises(codecs.UnsupportedFormatError) as info:
        codecs.decode(b"x", "image/png")
    assert info.value.status_code == 415 and "text/csv" in info.value.message


def test_decode_bad_json_raises_400():
    with pytest.raises(codecs.InferenceToolkitError) as info:
        codecs.decode("[1,", "application/json")
    assert info.value.status_code == 400


def test_encode_csv_one_dimensional_is_one_value_per_line():
    assert codecs.encode(np.array([0.5, 1.5, 2.0]), "text/csv") == b"0.5\n1.5\n2.0\n"
    assert codecs.encode(np.array([[1, 2], [3, 4]]), "text/csv") == b"1,2\n3,4\n"


def test_encode_first_supported_skips_unknown_and_defaults_on_wildcard():
    body, kind = codecs.encode_first_supported([1, 2], "image/png, application/json", "text/csv")
    assert (body, kind) == (b"[1, 2]", "application/json")
    assert codecs.encode_first_supported(np.array([1]), "*/*", "text/csv")[1] == "text/csv"
    with pytest.raises(codecs.UnsupportedFormatError) as info:
        codecs.encode_first_supported([1], "image/png", "application/json")
    assert info.value.status_code == 406


def test_bound_handler_with_context_argument_gets_context():
    context = Context(model_dir=__import__("pathlib").Path("/m"))
    bound = _Bound(lambda body, ct, ctx: ctx.system_properties["model_dir"], 2, "input_fn")
    assert bound.wants_context and bound(context, b"", "text/csv") == "/m"


def test_bound_handler_with_wrong_arity_fails_naming_function():
    with pytest.raises(ModelLoadError, match="input_fn takes 1 arguments; it must take 2"):
        _Bound(lambda body: body, 2, "inference.py: input_fn")


def test_error_response_uses_status_attribute_else_500():
    class Teapot(Exception):
        status_code = 418

    assert error_response(Teapot("short")).status == 418
    assert error_response(RuntimeError("boom")).status == 500
    assert error_response(RuntimeError("boom")).body.startswith(b"boom\n")
