"""What SageMaker's first-party built-ins (linear-learner, kmeans, pca, ...) share: hyperparameter specs and
validation, channel checks, the ``#quality_metric`` log lines, the model state file and the process wrapper.

* Hyperparameters arrive as strings (``"True"``, ``"15"``, ``"auto"``, ``'["msd"]'``). Each algorithm declares
  ``Param`` specs with SageMaker's names, defaults and ranges; ``parse_hyperparameters`` returns typed values
  or raises ``HyperparameterError`` with the real algorithms' wording (``Failed to validate input
  hyperparameters``) naming the parameter: missing required, unknown name, malformed or out-of-range value.
  ``sagemaker_*`` keys and ``_tuning_objective_metric`` are platform keys and pass.
* Metrics are printed as the 1P containers print them (``#quality_metric: host=algo-1, test mse
  <loss>=0.5``, ``..., epoch=3, validation <x>_objective <loss>=...``), so SageMaker's own MetricDefinitions
  regexes (``registry``) read them and tuning can use ``test:`` / ``validation:`` names as objectives.
* The model artifact is ``model_algo-1`` (SageMaker's name) inside model.tar.gz: here an ``.npz`` zip of the
  algorithm's arrays plus a JSON ``meta`` entry, read back without pickle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms.content import DataError, MlPaths, read_json

MODEL_FILENAME = "model_algo-1"
PLATFORM_KEYS = ("_tuning_objective_metric",)
_HP_PREFIX = "ClientError: Unable to initialize the algorithm. Failed to validate input hyperparameters."
_DATA_PREFIX = "ClientError: Unable to initialize the algorithm. Failed to validate input data configuration."

log = logging.getLogger("opensage.algorithms")


class UserError(Exception):
    """A problem the user must fix: its message becomes the job's FailureReason."""


class HyperparameterError(UserError):
    """A hyperparameter is missing, unknown, malformed or out of range."""


# ---------------------------------------------------------------------------------------------- hyperparameters


@dataclass(frozen=True)
class Param:
    """One hyperparameter: ``kind`` is int | float | bool | enum | str | list; ``auto`` lets the value be
    ``"auto"`` (returned as None); ``words`` are other literal strings accepted as-is (e.g. ``balanced``)."""

    name: str
    kind: str
    default: Any = None
    required: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    auto: bool = False
    words: tuple[str, ...] = ()

    def describe(self) -> str:
        """What the parameter accepts, in words (for error messages)."""
        if self.kind == "bool":
            text = "true or false"
        elif self.kind in ("enum", "list"):
            text = ("a list of " if self.kind == "list" else "one of ") + ", ".join(self.choices)
        else:
            noun = "an integer" if self.kind == "int" else "a number"
            text = f"{noun} in {_interval(self)}" if self.low is not None or self.high is not None else noun
        extra = (["auto"] if self.auto else []) + list(self.words)
        return text + (f", or {' or '.join(extra)}" if extra else "")

    def parse(self, raw: Any) -> Any:
        text = str(raw).strip()
        lowered = text.lower()
        if self.auto and lowered == "auto":
            return None
        if lowered in self.words:
            return lowered
        if self.kind == "bool":
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError
        if self.kind == "enum":
            if text not in self.choices:
                raise ValueError
            return text
        if self.kind == "str":
            return text
        if self.kind == "list":
            return self._parse_list(text)
        value = self._number(text)
        if not self._in_range(value):
            raise ValueError
        return value

    def _number(self, text: str) -> float | int:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError
        if self.kind == "int":
            if value != int(value):
                raise ValueError
            return int(value)
        return value

    def _in_range(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def _parse_list(self, text: str) -> list[str]:
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = [part for part in text.strip("[]").replace("'", "").split(",")]
        if isinstance(items, str):
            items = [items]
        items = [str(item).strip() for item in items if str(item).strip()]
        if not items or any(item not in self.choices for item in items):
            raise ValueError
        return items


def _interval(param: Param) -> str:
    low = "-inf" if param.low is None else _num(param.low)
    high = "+inf" if param.high is None else _num(param.high)
    left = "(" if param.low_open or param.low is None else "["
    right = ")" if param.high_open or param.high is None else "]"
    return f"{left}{low}, {high}{right}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def hyperparameter_error(reason: str) -> HyperparameterError:
    return HyperparameterError(f"{_HP_PREFIX} (caused by ValidationError)\n\nCaused by: {reason}")


def parse_hyperparameters(raw: Mapping[str, Any], specs: Sequence[Param]) -> dict[str, Any]:
    """Typed values for every spec (defaults filled in); HyperparameterError naming the first problem."""
    by_name = {spec.name: spec for spec in specs}
    unknown = sorted(k for k in raw if k not in by_name and not k.startswith("sagemaker_")
                     and k not in PLATFORM_KEYS)
    if unknown:
        raise hyperparameter_error(f"Additional properties are not allowed ({', '.join(repr(u) for u in unknown)} "
                                   f"{'was' if len(unknown) == 1 else 'were'} unexpected). Valid hyperparameters: "
                                   f"{', '.join(sorted(by_name))}.")
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in raw:
            if spec.required:
                raise hyperparameter_error(f"{spec.name!r} is a required property")
            values[spec.name] = spec.default
            continue
        try:
            values[spec.name] = spec.parse(raw[spec.name])
        except (TypeError, ValueError):
            raise hyperparameter_error(f"{str(raw[spec.name])!r} is not a valid value for hyperparameter "
                                       f"{spec.name!r}: expected {spec.describe()}.") from None
    return values


def require(values: Mapping[str, Any], name: str, when: str) -> None:
    """A conditionally required hyperparameter (e.g. num_classes for multiclass_classifier)."""
    if values.get(name) is None:
        raise hyperparameter_error(f"{name!r} is a required property when {when}")


def tuning_objective(raw: Mapping[str, Any]) -> str | None:
    """The metric an automatic tuning job optimises (SageMaker passes it as ``_tuning_objective_metric``)."""
    value = raw.get("_tuning_objective_metric")
    return str(value) if value else None


# ---------------------------------------------------------------------------------------------- channels


@dataclass
class JobInput:
    """A training job's configuration files, read once."""

    paths: MlPaths
    raw_hyperparameters: dict[str, Any]
    data_config: dict[str, dict[str, Any]]
    host: str

    @classmethod
    def read(cls, paths: MlPaths) -> JobInput:
        raw = read_json(paths.hyperparameters, {})
        data_config = read_json(paths.inputdataconfig, {})
        resources = read_json(paths.resourceconfig, {})
        if not isinstance(raw, dict) or not isinstance(data_config, dict):
            raise UserError("ClientError: hyperparameters.json and inputdataconfig.json must be JSON objects.")
        return cls(paths, raw, data_config, str(resources.get("current_host") or "algo-1"))

    def check_channels(self, allowed: Sequence[str], required: Sequence[str] = ("train",)) -> None:
        """Unknown channels fail the job as SageMaker's 1P algorithms do; required ones must be configured."""
        unknown = sorted(set(self.data_config) - set(allowed))
        if unknown:
            raise UserError(f"{_DATA_PREFIX} (caused by ValidationError)\n\nCaused by: Additional properties "
                            f"are not allowed ({', '.join(repr(u) for u in unknown)} unexpected). This algorithm "
                            f"takes the channels {', '.join(allowed)}.")
        for name in required:
            if name not in self.data_config:
                raise UserError(f"{_DATA_PREFIX} (caused by ValidationError)\n\nCaused by: {name!r} is a "
                                f"required property (channel '{name}' is missing).")

    def read_channels(self, allowed: Sequence[str], feature_dim: int, *, supervised: bool | Sequence[str],
                      supported: Sequence[str] | None = None) -> dict[str, Any]:
        """Check the channels, then read each configured one as a ``formats.Dataset`` whose width is
        ``feature_dim`` (sparse rows may stop short of it). ``supervised`` is a bool, or the channels whose
        records must carry labels. UserError names a channel without data or of the wrong width."""
        from opensage.algorithms import formats

        self.check_channels(allowed)
        data: dict[str, Any] = {}
        for name in allowed:
            if name not in self.data_config:
                continue
            labelled = supervised if isinstance(supervised, bool) else name in supervised
            extra = {} if supported is None else {"supported": tuple(supported)}
            found = formats.read_training_channel(name, self.paths.data, self.data_config[name],
                                                  supervised=labelled, **extra)
            if found is None:
                raise UserError(f"ClientError: channel '{name}' has no data (looked in {self.paths.data / name}).")
            if found.num_columns != feature_dim and not (found.is_sparse and found.num_columns < feature_dim):
                raise UserError(f"ClientError: feature_dim is {feature_dim} but the records of channel '{name}' "
                                f"have {found.num_columns} features.")
            if found.is_sparse and found.num_columns < feature_dim:
                found.features.resize((found.num_rows, feature_dim))
            data[name] = found
        return data


# ---------------------------------------------------------------------------------------------- metrics


def quality_metric(host: str, channel: str, name: str, value: float, *, kind: str = "score",
                   epoch: int | None = None) -> None:
    """Print one metric line in the 1P containers' format (read by the MetricDefinitions regexes)."""
    where = f"host={host}, " + (f"epoch={epoch}, " if epoch is not None else "")
    log.info("#quality_metric: %s%s %s <%s>=%s", where, channel, name, kind, repr(float(value)))


def progress_metric(host: str, percent: float) -> None:
    log.info("#progress_metric: host=%s, completed %s %%", host, repr(float(percent)))


# ---------------------------------------------------------------------------------------------- model state


def save_state(model_dir: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``model_algo-1`` (an npz zip: the arrays and a JSON ``meta`` entry) atomically."""
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / MODEL_FILENAME
    tmp = model_dir / f".{MODEL_FILENAME}.tmp"
    with open(tmp, "wb") as stream:
        np.savez(stream, meta=np.array(json.dumps(dict(meta))), **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, target)
    return target


def load_state(model_dir: Path, algorithm: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of ``model_algo-1``; ValueError (the model server's load error) if it is not ours."""
    path = Path(model_dir) / MODEL_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no {MODEL_FILENAME} (the {algorithm} model file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{MODEL_FILENAME} is not a {algorithm} model written by this platform: {exc}") from None
    if meta.get("algorithm") != algorithm:
        raise ValueError(f"{MODEL_FILENAME} holds a {meta.get('algorithm')!r} model, not a {algorithm} model")
    return arrays, meta


# ---------------------------------------------------------------------------------------------- process


def configure_logging() -> None:
    """Log lines as the 1P containers print them: ``[11/26/2026 14:00:00 INFO 1403...] message``."""
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, force=True,
                        format="[%(asctime)s %(levelname)s %(thread)d] %(message)s", datefmt="%m/%d/%Y %H:%M:%S")


def write_failure(paths: MlPaths, message: str) -> None:
    try:
        paths.failure.parent.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(message)
    except OSError:
        log.exception("Could not write %s", paths.failure)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse in this (short-lived, batch) process: blocks up to 32 MB
    come from the heap and the heap is never trimmed; larger ones are still mapped and returned on free.

    Why: a fresh process, or a zygote's child, starts at glibc's defaults (blocks over 128 KB mapped afresh,
    free heap above 128 KB trimmed), so each of the numpy temporaries an algorithm makes, 0.1-30 MB, is new
    memory the kernel must fault in 4 KB at a time and zero; a warm process reuses its heap (this is why a job
    computed slower than the same code run twice in one process). linear-learner's train() on 200k x 50 in a
    child forked from a process with the imports done (as a zygote's): 65k page faults, 0.3-0.8 s of system
    time, wall 1.25-1.95 s; with this 19k faults, 0.2 s, 1.06-1.4 s; peak RSS 400 -> 403 MB. Returns whether
    it applied (False where the C library has no mallopt, e.g. not glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def run(train: Callable[[JobInput], Path], name: str) -> int:
    """Process entry point of a 1P algorithm: 0 on success; otherwise ``output/failure`` and non-zero."""
    configure_logging()
    keep_freed_memory()
    paths = MlPaths.from_env()
    try:
        model = train(JobInput.read(paths))
    except UserError as exc:
        log.error("%s", exc)
        write_failure(paths, str(exc))
        return 1
    except DataError as exc:
        message = f"ClientError: {exc}"
        log.error("%s", message)
        write_failure(paths, message)
        return 1
    except Exception as exc:  # an algorithm bug: keep the traceback in the log
        log.error("Algorithm error\n%s", traceback.format_exc())
        write_failure(paths, f"AlgorithmError: {name}: {type(exc).__name__}: {exc}")
        return 2
    log.info("Model saved to %s", model)
    return 0
