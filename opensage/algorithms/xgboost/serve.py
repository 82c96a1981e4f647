"""Built-in XGBoost inference (algorithm mode): ``load(model_dir)`` and ``predict(model, payload, ...)``.

Requests: ``text/csv`` (no label column), ``text/libsvm`` (label optional), ``application/x-recordio-protobuf``
and ``application/x-parquet``. Responses: ``text/csv`` (the default; one value per line, multi-class
probabilities comma-separated per line), ``application/json`` (``{"predictions":[{"score":p}]}``),
``application/jsonlines`` (one ``{"score":p}`` per line) and ``application/x-recordio-protobuf``
(``label["score"]`` per record).

With ``OPENSAGE_IMAGE_VERSION`` set (``versions.py``; reference X3/X4) the container of that version is copied:
0.90-1 ... 1.2-1 ignore Accept and answer ``text/csv`` joined by ``,`` with no trailing newline (multi-class rows
as ``[0.1, 0.9]``), and load the model on the first invocation (``/ping`` is 200 without it; a broken model is a
500 ``Unable to load model: ...`` per invocation); 1.2-2+ honour Accept (csv one value per line, json
``{"predictions": [...]}``, jsonlines/recordio a 500 as SMC's encoder has neither) and load at start, so a
broken model fails the health check. Under ``SAGEMAKER_BATCH`` every version joins values by newlines.
Pickled Boosters load the way the container loads them, with a clear error where the installed xgboost cannot
(a 0.90 pickle under xgboost >= 1.0; a >= 1.0 pickle under 0.90, which would abort the process).
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms.content import DataError, parse_payload
from opensage.algorithms.xgboost import load_booster, selectable, versions
from opensage.algorithms.xgboost.versions import ContainerVersion

MODEL_FILENAME = "xgboost-model"
DEFAULT_ACCEPT = "text/csv"
CSV, JSON, JSONLINES, RECORDIO = "text/csv", "application/json", "application/jsonlines", \
    "application/x-recordio-protobuf"
ACCEPTS = (CSV, JSON, JSONLINES, RECORDIO)
LEGACY_PICKLE_MESSAGE = (
    "this model was saved by xgboost 0.90 (a pickled Booster, as the sagemaker-xgboost 0.90-1/0.90-2 images "
    "write it); xgboost {installed} cannot read it: run it with a 0.90 image (sagemaker-xgboost:0.90-2-cpu-py3), "
    "or load it with xgboost 0.90 and re-save it with Booster.save_model for a newer image")
NEWER_PICKLE_MESSAGE = (
    "this model is a Booster pickled by xgboost 1.0 or later; xgboost {installed} cannot read it (the real "
    "container aborts on it): run it with the image version that trained it")


SNAPSHOT_PICKLE_MESSAGE = (
    "this model is a Booster pickled by xgboost 1.0 ... 1.5 (as the sagemaker-xgboost 1.0-1/1.2-x images write "
    "it); xgboost {installed} cannot read that format: serve it with the image version that trained it "
    "(e.g. sagemaker-xgboost:1.2-1), which runs that version's xgboost here, or load it with that xgboost and "
    "re-save it with Booster.save_model(\"xgboost-model.json\")")
BINARY_MODEL_MESSAGE = (
    "{name} is in xgboost's legacy binary format (what save_model writes without an extension in the "
    "sagemaker-xgboost 1.3-1 ... 1.7-1 images); xgboost {installed} removed that format: serve it with the image "
    "version that trained it (e.g. sagemaker-xgboost:1.7-1), which runs that version's xgboost here, or re-save "
    "it as JSON/UBJSON (Booster.save_model(\"xgboost-model.json\")) with xgboost < 3.1")


class InferenceError(ValueError):
    """A request the model cannot answer; ``status`` is the HTTP status a model server should return."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ModelFormatError(ValueError):
    """The model file cannot be loaded by the installed xgboost; the message says what to do."""


@dataclass
class XGBoostModel:
    """A loaded booster and what predict needs to know about it."""

    booster: Any
    num_features: int | None
    best_iteration: int | None
    best_ntree_limit: int | None = None
    version: ContainerVersion = ContainerVersion()
    ensemble: list[XGBoostModel] = field(default_factory=list)  # 1.2-2+: every file of the model dir
    objective: str | None = None


class LazyModel:
    """0.90-1 ... 1.2-1: the model is loaded by the first invocation, and again by each one while it fails
    (the container's ``ScoringService.load_model``), so ``/ping`` answers 200 even for a broken artifact."""

    def __init__(self, model_dir: Path, version: ContainerVersion) -> None:
        self.model_dir = model_dir
        self.version = version
        self._model: XGBoostModel | None = None

    def get(self) -> XGBoostModel:
        if self._model is None:
            try:
                self._model = load_now(self.model_dir, self.version)
            except Exception as exc:  # noqa: BLE001 - any load failure is the container's 500
                raise InferenceError(f"Unable to load model: {exc}", status=500) from None
        return self._model


# ------------------------------------------------------------------------------------------ loading


def _model_file(model_dir: Path, version: ContainerVersion) -> Path:
    preferred = model_dir / MODEL_FILENAME
    if preferred.is_file():
        return preferred
    files = [p for p in model_dir.iterdir() if p.is_file()]
    if version.skips_dotfiles:
        files = [p for p in files if not p.name.startswith(".")]
    files.sort(key=lambda p: (p.name.startswith("."), p.name))
    if version.tag is not None and files:
        return files[0]  # the container takes the first listed file (os.listdir order; sorted here)
    if len(files) != 1:
        raise FileNotFoundError(f"{model_dir} has no {MODEL_FILENAME} file (found: {[p.name for p in files]})")
    return files[0]


def pickled_booster_kind(path: Path) -> str | None:
    """``legacy`` for a Booster pickled by xgboost 0.90 (its raw model inside), ``modern`` for one pickled by
    xgboost >= 1.0 (``CONFIG-offset:`` or JSON/UBJSON serialisation), None when the file is not a pickled
    Booster (a model file, or some other pickle)."""
    handle = versions.pickled_handle(path)
    if handle is None:
        return None
    return "modern" if handle.startswith((b"CONFIG-offset:", b"{")) else "legacy"


def _xgboost_major(xgb: Any) -> int:
    return int(str(getattr(xgb, "__version__", "3")).split(".")[0])


def _reads_legacy_formats(xgb: Any) -> bool:
    """xgboost 3.1 removed the binary model format and the ``CONFIG-offset:`` snapshots that 1.0 ... ~1.5 pickled."""
    parts = str(getattr(xgb, "__version__", "3.1")).split(".")
    return (int(parts[0]), int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0) < (3, 1)


def _unpickle_booster(path: Path, xgb: Any) -> Any:
    kind = pickled_booster_kind(path)
    major = _xgboost_major(xgb)
    if kind == "legacy" and major >= 1:
        raise ModelFormatError(LEGACY_PICKLE_MESSAGE.format(installed=xgb.__version__))
    if kind == "modern" and major < 1:
        raise ModelFormatError(NEWER_PICKLE_MESSAGE.format(installed=xgb.__version__))
    if versions.model_file_format(path) == versions.PICKLE_SNAPSHOT and not _reads_legacy_formats(xgb):
        raise ModelFormatError(SNAPSHOT_PICKLE_MESSAGE.format(installed=xgb.__version__))
    try:
        with open(path, "rb") as stream:
            booster = pickle.load(stream)  # noqa: S301 - the user's own model artifact, as SageMaker does
    except xgb.core.XGBoostError as exc:  # never the C++ trace: its first line says what failed
        reason = str(exc).split("Stack trace:")[0].strip()
        raise ModelFormatError(f"the pickled Booster {path.name} cannot be loaded by xgboost "
                               f"{xgb.__version__}: {reason}") from None
    if not isinstance(booster, xgb.Booster):
        raise ModelFormatError(f"{path.name} is a pickle of {type(booster).__name__}, not of an xgboost Booster")
    return booster


def _load_booster(path: Path) -> Any:
    """A pickle (as the containers try first) is unpickled after its Booster state was inspected; any other
    file goes to ``Booster.load_model``. A file the installed xgboost cannot read raises ModelFormatError."""
    import xgboost as xgb

    if _starts_like_pickle(path):
        return _unpickle_booster(path, xgb)
    if not _reads_legacy_formats(xgb) and versions.model_file_format(path) == versions.BINARY:
        raise ModelFormatError(BINARY_MODEL_MESSAGE.format(name=path.name, installed=xgb.__version__))
    try:
        return load_booster(path)
    except (xgb.core.XGBoostError, UnicodeDecodeError, ValueError) as exc:
        reason = str(exc).split("Stack trace:")[0].strip()
        raise ModelFormatError(f"Model {path.name} cannot be loaded by xgboost {xgb.__version__}: {reason}") from None


def _starts_like_pickle(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(1) == b"\x80"


def ensemble_enabled(version: ContainerVersion) -> bool:
    """1.2-2+ load every file of the model dir and combine their predictions unless
    ``SAGEMAKER_INFERENCE_ENSEMBLE`` is not ``true`` (its default)."""
    return version.at_least("1.2-2") and version.tag is not None and \
        os.environ.get("SAGEMAKER_INFERENCE_ENSEMBLE", "true") == "true"


def _ensemble_files(model_dir: Path, version: ContainerVersion) -> list[Path]:
    files = [p for p in model_dir.iterdir() if p.is_file()]
    if version.skips_dotfiles:
        files = [p for p in files if not p.name.startswith(".")]
    return sorted(files, key=lambda p: p.name)


def load_now(model_dir: Path, version: ContainerVersion) -> XGBoostModel:
    """Load the model file(s) of ``model_dir`` now. With an ensemble (1.2-2+: k-fold training writes
    ``xgboost-model-<fold>``) every file must load: a stray file in model.tar.gz fails the model, as there."""
    if ensemble_enabled(version):
        files = _ensemble_files(model_dir, version)
        if len(files) > 1:
            members = [_load_model_file(path, version) for path in files]
            first = members[0]
            objective = selectable.booster_objective(first.booster)[0]
            return XGBoostModel(booster=first.booster, num_features=first.num_features,
                                best_iteration=first.best_iteration, best_ntree_limit=first.best_ntree_limit,
                                version=version, ensemble=members, objective=objective)
    return _load_model_file(_model_file(model_dir, version), version)


def _load_model_file(path: Path, version: ContainerVersion) -> XGBoostModel:
    booster = _load_booster(path)
    best = booster.attr("best_iteration")
    if hasattr(booster, "num_features"):
        num_features: int | None = booster.num_features()
    else:  # xgboost 0.90: only the names it was trained with
        names = getattr(booster, "feature_names", None)
        num_features = len(names) if names else None
    ntree = getattr(booster, "best_ntree_limit", None)
    return XGBoostModel(booster=booster, num_features=num_features,
                        best_iteration=int(best) if best is not None else None,
                        best_ntree_limit=int(ntree) if isinstance(ntree, (int, np.integer)) else None,
                        version=version)


def load(model_dir: str | Path) -> XGBoostModel | LazyModel:
    """Load ``<model_dir>/xgboost-model`` (Booster binary/UBJSON/JSON, or a pickled Booster); for 0.90-1 ...
    1.2-1 only remember where it is (loaded by the first invocation, as those containers do)."""
    version = versions.current()
    if version.lazy_model_load:
        return LazyModel(Path(model_dir), version)
    return load_now(Path(model_dir), version)


# ------------------------------------------------------------------------------------------ predicting


def _dmatrix(model: XGBoostModel, features: Any) -> Any:
    import xgboost as xgb

    width = features.shape[1]
    expected = model.num_features
    if expected is not None and width > expected:
        raise InferenceError(f"request has {width} feature columns but the model was trained on {expected}")
    if expected is not None and width < expected:
        if hasattr(features, "tocsr"):  # sparse rows simply lack the trailing features
            features = features.tocsr()
            features.resize((features.shape[0], expected))
        else:
            raise InferenceError(f"request has {width} feature columns but the model was trained on {expected}")
    return xgb.DMatrix(features, missing=np.nan)


def _base_type(media_type: str | None) -> str:
    return (media_type or "").split(";")[0].strip().lower()


def _accept(accept: str | None) -> str:
    for option in (accept or "").split(","):
        base = _base_type(option)
        if base in ("", "*/*"):
            return DEFAULT_ACCEPT
        if base in ACCEPTS:
            return base
    raise InferenceError(f"Accept {accept!r} is not supported; use {', '.join(ACCEPTS)}.", status=406)


def _modern_predict(booster: Any) -> bool:
    """``inplace_predict`` with ``iteration_range`` exists from xgboost 1.4; 0.90 ... 1.3 take ``ntree_limit``."""
    import xgboost as xgb

    parts = str(xgb.__version__).split(".")
    return hasattr(booster, "inplace_predict") and (int(parts[0]), int(parts[1])) >= (1, 4)


def predict_array(model: XGBoostModel | LazyModel, payload: bytes, content_type: str | None) -> np.ndarray:
    """Raw predictions (1-D, or 2-D for multi:softprob) for a request body."""
    import xgboost as xgb

    versioned = model.version.tag is not None
    try:
        features = parse_payload(payload, content_type or CSV)
    except DataError as exc:
        # The containers answer 415 to any unparsable body; a malformed value stays a 400 here (the message
        # names the line), an unsupported content type is the 415.
        status = 415 if "not supported" in str(exc) else 400
        raise InferenceError(str(exc), status=status) from None
    if isinstance(model, LazyModel):
        model = model.get()
    if features.shape[0] == 0:
        raise InferenceError("request has no rows")
    try:
        return _predict(model, features)
    except xgb.core.XGBoostError as exc:
        reason = str(exc).split("Stack trace:")[0].strip()
        if versioned:
            raise InferenceError(f"Unable to evaluate payload provided: {reason}") from None
        raise InferenceError(f"prediction failed: {reason}") from None


def _predict(model: XGBoostModel, features: Any) -> np.ndarray:
    if model.ensemble:
        outputs = np.stack([_predict(member, features) for member in model.ensemble])
        if model.objective in ("multi:softmax", "binary:hinge"):  # majority vote (smallest value on ties)
            from scipy import stats

            return np.asarray(stats.mode(outputs, axis=0, keepdims=False).mode)
        return outputs.mean(axis=0)
    if not _modern_predict(model.booster):
        kwargs: dict[str, Any] = {"validate_features": False}
        if model.best_ntree_limit:
            kwargs["ntree_limit"] = model.best_ntree_limit
        return np.asarray(model.booster.predict(_dmatrix(model, features), **kwargs))
    kwargs = {"validate_features": False}
    if model.best_iteration is not None:
        kwargs["iteration_range"] = (0, model.best_iteration + 1)
    if isinstance(features, np.ndarray) and features.ndim == 2 and features.shape[1] == model.num_features:
        # Dense rows: predict in place (no DMatrix copy; about half the CPU of DMatrix + predict).
        return np.asarray(model.booster.inplace_predict(features, missing=np.nan, **kwargs))
    return np.asarray(model.booster.predict(_dmatrix(model, features), **kwargs))


def _score(row: Any) -> Any:
    return row.tolist() if isinstance(row, np.ndarray) else float(row)


def encode(predictions: np.ndarray, accept: str) -> bytes:
    """Serialize predictions for an Accept type (one of ``ACCEPTS``), the platform's way (version unset)."""
    if accept == CSV:
        if predictions.ndim == 1:
            lines = [str(v) for v in predictions.astype(np.float32)]
        else:
            lines = [",".join(str(v) for v in row) for row in predictions.astype(np.float32)]
        return ("\n".join(lines) + "\n").encode()
    if accept == JSON:
        return json.dumps({"predictions": [{"score": _score(row)} for row in predictions]}).encode()
    if accept == JSONLINES:
        return "".join(json.dumps({"score": _score(row)}) + "\n" for row in predictions).encode()
    from opensage.algorithms import recordio

    return recordio.encode_label_records({"score": predictions})


def _container_accept(accept: str | None) -> str:
    """1.2-2+: the whole header is one media type (``cgi.parse_header``); absent or ``*/*`` is
    ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default text/csv); anything else unsupported is a 406."""
    base = (accept or "").split(";")[0].strip()
    if not base or base == "*/*":
        return os.environ.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", DEFAULT_ACCEPT)
    if base.lower() not in ACCEPTS:
        raise InferenceError(f"Accept type {base} is not supported. Please use supported accept types: "
                             f"{list(ACCEPTS)}.", status=406)
    return base.lower()


def _array_to_csv(values: list[Any]) -> str:
    """sagemaker-containers' ``array_to_csv`` (np.savetxt, fmt %s): one value per line, rows comma-joined."""
    lines = [",".join(str(v) for v in row) if isinstance(row, list) else str(row) for row in values]
    return "".join(line + "\n" for line in lines)


def encode_for_version(predictions: np.ndarray, accept: str | None, version: ContainerVersion,
                       batch: bool) -> tuple[bytes, str]:
    """The body and content type ``version``'s container answers (XC algorithm_mode/serve.py)."""
    values = predictions.tolist()  # float32 widened to Python floats: 0.43861907720565796
    if version.legacy_realtime_output:
        if batch:
            return ("\n".join(map(str, values)) + "\n").encode(), CSV
        return ",".join(map(str, values)).encode(), CSV
    response_type = _container_accept(accept)
    if batch:
        return ("\n".join(map(str, values)) + "\n").encode(), response_type
    if response_type == JSON:
        return json.dumps({"predictions": [{"score": v} for v in values]}).encode(), JSON
    if response_type == CSV:
        return _array_to_csv(values).encode(), CSV
    raise InferenceError(f"Content type {response_type} is not supported by this framework.", status=500)


def _selected(model: XGBoostModel | LazyModel, predictions: np.ndarray, accept: str | None, batch: bool,
              ) -> tuple[bytes, str]:
    """``SAGEMAKER_INFERENCE_OUTPUT`` (1.0-1+): Accept is honoured here even by 1.0-1 and 1.2-1."""
    response_type = _container_accept(accept)
    loaded = model.get() if isinstance(model, LazyModel) else model
    keys = selectable.selected_keys()
    try:
        objective, num_class = selectable.booster_objective(loaded.booster)
        rows = selectable.select(predictions, keys, objective, num_class)
        return selectable.encode(rows, keys, response_type, batch), response_type
    except Exception as exc:  # noqa: BLE001 - the container answers any failure here with a 500
        raise InferenceError(str(exc), status=500) from None


def predict(model: XGBoostModel | LazyModel, payload: bytes, content_type: str | None, accept: str | None,
            ) -> tuple[bytes, str]:
    """Answer one invocation: (response body, response content type)."""
    if model.version.tag is not None:
        predictions = predict_array(model, payload, content_type)
        batch = "SAGEMAKER_BATCH" in os.environ
        if model.version.at_least("1.0-1") and selectable.enabled():
            return _selected(model, predictions, accept, batch)
        return encode_for_version(predictions, accept, model.version, batch)
    response_type = _accept(accept)
    return encode(predict_array(model, payload, content_type), response_type), response_type
