"""What a model server calls: built-in algorithm handlers and the script-mode (framework) transformer.

Every handler has ``load()`` (once, before ``/ping`` turns 200) and ``invoke(request) -> Response``
(per request; never raises). Two kinds:

* ``BuiltinHandler`` - a built-in algorithm's serve module (``load(model_dir)`` /
  ``predict(model, payload, content_type, accept)``, errors as ``InferenceError`` with ``.status``).
* ``ScriptHandler`` - the sagemaker-inference toolkit's ``Transformer``: the user module
  (``SAGEMAKER_PROGRAM``, default ``inference.py``, from the code directory) may define ``model_fn``,
  ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn`` (not both kinds), each optionally taking
  a trailing ``context``; what it leaves out comes from the framework's defaults (``FRAMEWORK_DEFAULTS``:
  scikit-learn, PyTorch, XGBoost script mode). JSON and CSV bodies reach ``input_fn`` as ``str``.

Errors from user code answer with the error's ``status_code`` / ``status`` (default 500) and the body
``message\\ntraceback``, as the toolkit does.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from opensage.serving import codecs

DEFAULT_PROGRAM = "inference.py"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
TARGET_CONTAINER = "X-Amzn-SageMaker-Target-Container-Hostname"
# A 400 carrying this header (value ValidationError) is the caller's mistake, not the model's: the runtime
# reports it as a ValidationError with the body as the message instead of a ModelError.
ERROR_TYPE_HEADER = "X-OpenSage-Error-Type"


@dataclass
class Request:
    body: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None = None
    target_model: str | None = None  # X-Amzn-SageMaker-Target-Model (multi-model endpoints)
    target_container_hostname: str | None = None  # X-Amzn-SageMaker-Target-Container-Hostname (Direct)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class Handler(Protocol):
    def load(self) -> None: ...

    def invoke(self, request: Request) -> Response: ...


class ModelLoadError(RuntimeError):
    """The model or the user module could not be loaded; the message says what to fix."""


def validation_error(message: str) -> Response:
    """The request is invalid for this endpoint (e.g. a TargetModel it does not have): a ValidationError."""
    return Response(400, message.encode("utf-8", "replace"), "text/plain", {ERROR_TYPE_HEADER: "ValidationError"})


def error_response(exc: BaseException, *, with_traceback: bool = True) -> Response:
    """The toolkit's error answer: the exception's status (default 500), body ``message\\ntraceback``."""
    status = _status_of(exc)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    body = f"{message}\n{traceback.format_exc()}" if with_traceback else message
    return Response(status=status, body=body.encode("utf-8", "replace"), content_type="text/plain")


def _status_of(exc: BaseException) -> int:
    for name in ("status_code", "status"):
        value = getattr(exc, name, None)
        if isinstance(value, int) and 400 <= value <= 599:
            return value
    return 500


def misrouted(handler: Handler, request: Request) -> Response | None:
    """A ValidationError for routing headers this server cannot honour (single model, single container)."""
    if request.target_model and not getattr(handler, "multi_model", False):
        return validation_error(
            f"TargetModel '{request.target_model}' was given, but this endpoint hosts a single model (its "
            f"container's Mode is SingleModel): TargetModel is only for multi-model endpoints. Leave it out.")
    if request.target_container_hostname and not getattr(handler, "multi_container", False):
        return validation_error(
            f"TargetContainerHostname '{request.target_container_hostname}' was given, but this endpoint is not "
            f"configured for direct invocation (a model with several Containers and InferenceExecutionConfig "
            f"Mode Direct). Leave it out.")
    return None


def answer(handler: Handler, request: Request) -> Response:
    """One invocation, never raising: what the model server sends back for ``POST /invocations``, and what
    a batch-transform worker predicting in its own process uses instead of the HTTP hop (one code path)."""
    rejected = misrouted(handler, request)
    if rejected is not None:
        return rejected
    try:
        response = handler.invoke(request)
    except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the connection
        return Response(500, f"{exc}\n{traceback.format_exc()}".encode(), "text/plain")
    if CUSTOM_ATTRIBUTES not in response.headers:
        for name in list(response.headers):
            if name.lower() == CUSTOM_ATTRIBUTES.lower():
                response.headers[CUSTOM_ATTRIBUTES] = response.headers.pop(name)
    return response


# ------------------------------------------------------------------------------------------ built-ins
class BuiltinHandler:
    """A built-in algorithm's serve module over ``model_dir``."""

    def __init__(self, serve_module: str, model_dir: Path) -> None:
        self.serve_module_name = serve_module
        self.model_dir = model_dir
        self._module: Any = None
        self._model: Any = None

    def load(self) -> None:
        if self.serve_module_name.startswith("opensage.algorithms.xgboost"):
            from opensage.algorithms.xgboost import import_xgboost_fast

            import_xgboost_fast()  # ~1 s less before /ping turns 200 (xgboost without sklearn)
        self._module = importlib.import_module(self.serve_module_name)
        try:
            self._model = self._module.load(self.model_dir)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelLoadError(f"Could not load the model from {self.model_dir} (the unpacked "
                                 f"ModelDataUrl): {exc}") from exc

    def invoke(self, request: Request) -> Response:
        try:
            body, content_type = self._module.predict(self._model, request.body, request.content_type,
                                                      request.accept)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an HTTP answer
            # InferenceError is the user's request: its message is the answer, no traceback needed.
            expected = hasattr(exc, "status")
            return error_response(exc, with_traceback=not expected)
        return Response(status=200, body=body, content_type=content_type)


# ------------------------------------------------------------------------------------- framework defaults
@dataclass(frozen=True)
class FrameworkDefaults:
    """A framework container's default handler functions."""

    model_fn: Callable[..., Any]
    input_fn: Callable[..., Any]
    predict_fn: Callable[..., Any]
    output_fn: Callable[..., Any]


def _no_model_fn(framework: str, example: str) -> Callable[[str], Any]:
    def model_fn(model_dir: str) -> Any:
        raise ModelLoadError(
            f"The {framework} container has no default model_fn: define model_fn(model_dir) in your "
            f"inference script ({DEFAULT_PROGRAM} under code/ in model.tar.gz, or SAGEMAKER_PROGRAM), "
            f"e.g. {example}.")

    return model_fn


def _encode_output(prediction: Any, accept: str) -> tuple[bytes, str]:
    return codecs.encode_first_supported(prediction, accept, default_accept())


# scikit-learn (sagemaker-scikit-learn-container serving.py)
def sklearn_input_fn(body: bytes | str, content_type: str | None) -> Any:
    import numpy as np

    kind = codecs.media_type(content_type)
    return codecs.decode(body, content_type, dtype=np.float32 if kind in codecs.UTF8_TYPES else None)


def sklearn_predict_fn(data: Any, model: Any) -> Any:
    return model.predict(data)


# PyTorch (sagemaker-pytorch-inference-toolkit default_pytorch_inference_handler.py)
def _torch_device() -> Any:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytorch_model_fn(model_dir: str) -> Any:
    import torch

    path = Path(model_dir) / "model.pt"
    if not path.is_file():
        raise ModelLoadError(
            f"Failed to load model with default model_fn: missing file model.pt in {model_dir}. Save a "
            f"TorchScript model (torch.jit.save) as model.pt at the root of model.tar.gz, or define "
            f"model_fn(model_dir) in your inference script.")
    return torch.jit.load(str(path), map_location=_torch_device()).to(_torch_device())


def pytorch_input_fn(body: bytes | str, content_type: str | None) -> Any:
    import numpy as np
    import torch

    if codecs.media_type(content_type) in codecs.UTF8_TYPES:
        tensor = torch.from_numpy(codecs.decode(body, content_type, dtype=np.float32))
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(codecs.decode(body, content_type)))
    return tensor.to(_torch_device())


def pytorch_predict_fn(data: Any, model: Any) -> Any:
    import torch

    device = _torch_device()
    model.to(device)
    model.eval()
    with torch.no_grad():
        return model(data.to(device))


def pytorch_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    if hasattr(prediction, "detach"):
        prediction = prediction.detach().cpu().numpy()
    return _encode_output(prediction, accept)


# XGBoost script mode (sagemaker-xgboost-container handler_service.py)
def xgboost_input_fn(body: bytes | str, content_type: str | None) -> Any:
    import xgboost as xgb

    from opensage.algorithms.content import DataError, parse_payload

    payload = body.encode("utf-8") if isinstance(body, str) else body
    if not payload:
        raise codecs.InferenceToolkitError(400, "The request body is empty: send rows to predict.")
    try:
        features = parse_payload(payload, content_type or "text/csv")
    except DataError as exc:
        status = 415 if "not supported" in str(exc) else 400
        raise codecs.InferenceToolkitError(status, str(exc)) from None
    return xgb.DMatrix(features)


def xgboost_predict_fn(data: Any, model: Any) -> Any:
    return model.predict(data, validate_features=False)


def xgboost_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    for kind in codecs.parse_accept(accept, default_accept()):
        if kind in (codecs.CSV, codecs.JSON):
            return codecs.encode(prediction, kind), kind
    raise codecs.UnsupportedFormatError(accept, status_code=406, supported=(codecs.CSV, codecs.JSON))


FRAMEWORK_DEFAULTS: dict[str, FrameworkDefaults] = {
    "sklearn": FrameworkDefaults(
        _no_model_fn("scikit-learn", "return joblib.load(os.path.join(model_dir, 'model.joblib'))"),
        sklearn_input_fn, sklearn_predict_fn, _encode_output),
    "pytorch": FrameworkDefaults(pytorch_model_fn, pytorch_input_fn, pytorch_predict_fn, pytorch_output_fn),
    "xgboost": FrameworkDefaults(
        _no_model_fn("XGBoost (script mode)",
                     "booster = xgb.Booster(); booster.load_model(os.path.join(model_dir, 'xgboost-model'))"),
        xgboost_input_fn, xgboost_predict_fn, xgboost_output_fn),
}


def defaults_for(framework: str) -> FrameworkDefaults:
    try:
        return FRAMEWORK_DEFAULTS[framework]
    except KeyError:
        raise ModelLoadError(f"No default inference handlers for framework '{framework}'; supported: "
                             f"{', '.join(sorted(FRAMEWORK_DEFAULTS))}.") from None


# ------------------------------------------------------------------------------------------ script mode
class Context:
    """The ``context`` a handler function may take last (the toolkit's MMS context, trimmed)."""

    def __init__(self, model_dir: Path, request: Request | None = None) -> None:
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None}
        self.request = request
        self.response_headers: dict[str, str] = {}
        self.response_content_type: str | None = None
        self.response_status: int | None = None

    @property
    def request_processor(self) -> list[Context]:
        return [self]

    def get_request_properties(self) -> dict[str, str]:
        if self.request is None:
            return {}
        props = {"Content-Type": self.request.content_type or "", "Accept": self.request.accept or ""}
        if self.request.custom_attributes is not None:
            props[CUSTOM_ATTRIBUTES] = self.request.custom_attributes
        return props

    def get_request_header(self, idx: int, key: str) -> str | None:
        wanted = key.lower()
        for name, value in self.get_request_properties().items():
            if name.lower() == wanted:
                return value
        return None

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers[key] = value

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.response_content_type = value

    def set_response_status(self, code: int = 200, phrase: str = "") -> None:
        self.response_status = code

    @property
    def custom_attributes(self) -> str | None:
        return self.request.custom_attributes if self.request else None


class _Bound:
    """A handler function and whether it wants the trailing ``context``."""

    __slots__ = ("fn", "wants_context")

    def __init__(self, fn: Callable[..., Any], n_args: int, where: str) -> None:
        self.fn = fn
        try:
            params = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            has_varargs = any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params, has_varargs = [], True
        if has_varargs or len(params) == n_args:
            self.wants_context = False
        elif len(params) == n_args + 1:
            self.wants_context = True
        else:
            raise ModelLoadError(f"{where} takes {len(params)} arguments; it must take {n_args} "
                                 f"(or {n_args + 1} with a trailing context).")

    def __call__(self, context: Context, *args: Any) -> Any:
        return self.fn(*args, context) if self.wants_context else self.fn(*args)


class ScriptHandler:
    """The sagemaker-inference ``Transformer`` over a user module and a framework's defaults."""

    def __init__(self, framework: str, model_dir: Path, code_dir: Path | None, program: str | None,
                 default_accept: str) -> None:
        self.framework = framework
        self.model_dir = model_dir
        self.code_dir = code_dir
        self.program = program
        self.default_accept = default_accept
        self.defaults = defaults_for(framework)
        self._model: Any = None
        self._transform: _Bound | None = None
        self._input = self._predict = self._output = None

    # -- loading
    def load(self) -> None:
        module = self._import_user_module()
        where = self._program_label()
        fns = {name: getattr(module, name, None) if module else None
               for name in ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")}
        if fns["transform_fn"] and (fns["input_fn"] or fns["predict_fn"] or fns["output_fn"]):
            raise ModelLoadError(
                f"{where} defines transform_fn together with input_fn/predict_fn/output_fn: define "
                f"transform_fn alone, or the other three (any of them), not both.")
        model_fn = _Bound(fns["model_fn"] or self.defaults.model_fn, 1, f"{where}: model_fn")
        if fns["transform_fn"]:
            self._transform = _Bound(fns["transform_fn"], 4, f"{where}: transform_fn")
        self._input = _Bound(fns["input_fn"] or self.defaults.input_fn, 2, f"{where}: input_fn")
        self._predict = _Bound(fns["predict_fn"] or self.defaults.predict_fn, 2, f"{where}: predict_fn")
        self._output = _Bound(fns["output_fn"] or self.defaults.output_fn, 2, f"{where}: output_fn")
        self._model = model_fn(Context(self.model_dir), str(self.model_dir))

    def _program_label(self) -> str:
        return str(self.code_dir / (self.program or DEFAULT_PROGRAM)) if self.code_dir else \
            (self.program or DEFAULT_PROGRAM)

    def _import_user_module(self) -> Any:
        program = self.program or DEFAULT_PROGRAM
        if self.code_dir is None:
            if self.program:
                raise ModelLoadError(f"SAGEMAKER_PROGRAM is '{program}' but there is no code directory: "
                                     f"put it under code/ in model.tar.gz or set SAGEMAKER_SUBMIT_DIRECTORY.")
            return None
        path = self.code_dir / program
        if not path.is_file():
            if self.program and self.program != DEFAULT_PROGRAM:
                raise ModelLoadError(f"SAGEMAKER_PROGRAM '{program}' is not in {self.code_dir} (found: "
                                     f"{sorted(p.name for p in self.code_dir.iterdir())[:20]}).")
            return None  # no user module: the framework's defaults serve the model
        return load_user_module(path, self.code_dir)

    # -- requests
    def invoke(self, request: Request) -> Response:
        context = Context(self.model_dir, request)
        accept = request.accept
        if not accept or codecs.media_type(accept) in ("", codecs.ANY):
            accept = self.default_accept
        body: bytes | str = request.body
        if codecs.media_type(request.content_type) in codecs.UTF8_TYPES:
            try:
                body = request.body.decode("utf-8")
            except UnicodeDecodeError as exc:
                return Response(400, f"{request.content_type} body is not UTF-8: {exc}".encode(), "text/plain")
        try:
            if self._transform is not None:
                result = self._transform(context, self._model, body, request.content_type, accept)
            else:
                data = self._input(context, body, request.content_type)
                prediction = self._predict(context, data, self._model)
                result = self._output(context, prediction, accept)
        except Exception as exc:  # noqa: BLE001 - the toolkit answers every error
            return error_response(exc)
        return self._response(result, accept, context)

    def _response(self, result: Any, accept: str, context: Context) -> Response:
        content_type = context.response_content_type or accept
        if isinstance(result, tuple) and len(result) == 2:
            result, content_type = result
        elif hasattr(result, "get_data") and hasattr(result, "mimetype"):  # a Flask/werkzeug Response
            result, content_type = result.get_data(), result.mimetype
        if isinstance(result, str):
            result = result.encode("utf-8")
        elif isinstance(result, list) and len(result) == 1 and isinstance(result[0], bytes | str):
            result = result[0] if isinstance(result[0], bytes) else result[0].encode("utf-8")
        elif not isinstance(result, bytes | bytearray | memoryview):
            return Response(500, (f"output_fn/transform_fn returned {type(result).__name__}; return bytes, "
                                  f"str or (body, content_type).").encode(), "text/plain")
        return Response(context.response_status or 200, bytes(result), content_type,
                        dict(context.response_headers))


def load_user_module(path: Path, code_dir: Path) -> Any:
    """Import the user's inference script with its directory (and the code root) on ``sys.path``."""
    for directory in (str(path.parent), str(code_dir)):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"Cannot import {path}: it is not a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelLoadError(f"Importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


def default_accept() -> str:
    return os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or codecs.JSON
