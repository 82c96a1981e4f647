"""Selectable inference output of the sagemaker-xgboost containers (1.0-1 and later).

``SAGEMAKER_INFERENCE_OUTPUT=predicted_label,probabilities,...`` (lower-cased, spaces removed) makes each
prediction an object of those keys (XC algorithm_mode/serve_utils.py ``get_selected_predictions``): the
objective and num_class come from the booster's own config; a key the objective does not give is NaN (a bare
``NaN`` in JSON); an objective outside ``VALID_OBJECTIVES`` is a 500. Encodings: JSON
``{"predictions": [...]}``, JSON Lines one object per line, recordio one Record per row (``label[key]``), CSV the
values in the variable's order joined by ``,`` (lists as ``"[0.4, 0.6]"``), rows by newlines, with a trailing
newline only under ``SAGEMAKER_BATCH``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

ENV_VAR = "SAGEMAKER_INFERENCE_OUTPUT"
PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES = "predicted_label", "labels", "probability", "probabilities"
RAW_SCORE, RAW_SCORES, PREDICTED_SCORE = "raw_score", "raw_scores", "predicted_score"
_CLASSIFIER_KEYS = (PREDICTED_LABEL, LABELS, RAW_SCORE, RAW_SCORES)
_PROBABILISTIC_KEYS = (PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES)
VALID_OBJECTIVES: dict[str, tuple[str, ...]] = {
    "reg:squarederror": (PREDICTED_SCORE,), "reg:logistic": (PREDICTED_SCORE,), "reg:gamma": (PREDICTED_SCORE,),
    "reg:absoluteerror": (PREDICTED_SCORE,), "reg:tweedie": (PREDICTED_SCORE,),
    "binary:logistic": _PROBABILISTIC_KEYS, "binary:logitraw": _CLASSIFIER_KEYS, "binary:hinge": _CLASSIFIER_KEYS,
    "multi:softmax": _CLASSIFIER_KEYS, "multi:softprob": _PROBABILISTIC_KEYS,
}


class SelectableOutputError(ValueError):
    """The selected output cannot be produced (answered 500, as the container does)."""

    status = 500


def enabled() -> bool:
    return ENV_VAR in os.environ


def selected_keys() -> list[str]:
    return os.environ.get(ENV_VAR, "").replace(" ", "").lower().split(",")


def booster_objective(booster: Any) -> tuple[str, str]:
    """(objective name, num_class) from ``booster.save_config()`` (xgboost >= 1.0)."""
    config = json.loads(booster.save_config())
    learner = config["learner"]
    return learner["objective"]["name"], str(learner.get("learner_model_param", {}).get("num_class", ""))


def _labels(objective: str, num_class: str) -> Any:
    if "binary:" in objective:
        return [0, 1]
    if "multi:" in objective and num_class:
        return list(range(int(num_class)))
    return math.nan


def _value(key: str, objective: str, num_class: str, raw: np.ndarray) -> Any:
    probabilistic = objective in ("multi:softprob", "binary:logistic")
    if key == PREDICTED_LABEL:
        if objective in ("binary:hinge", "multi:softmax"):
            return raw.item()
        if objective == "binary:logistic":
            return int(raw > 0.5)
        if objective == "binary:logitraw":
            return int(raw > 0)
        return int(np.argmax(raw)) if objective == "multi:softprob" else math.nan
    if key == LABELS:
        return _labels(objective, num_class)
    if key in (PROBABILITY, RAW_SCORE) and objective == "multi:softprob":
        return max(raw).item()
    if key == PROBABILITY:
        return raw.item() if probabilistic else math.nan
    if key in (PROBABILITIES, RAW_SCORES) and objective == "multi:softprob":
        return raw.tolist()
    if key in (PROBABILITIES, RAW_SCORES):
        return [1.0 - raw.item(), raw.item()]
    if key == RAW_SCORE:
        return raw.item()
    return raw.item()  # predicted_score


def select(predictions: np.ndarray, keys: list[str], objective: str, num_class: str) -> list[dict[str, Any]]:
    """One object per prediction with the selected keys (NaN for keys the objective does not give)."""
    if objective not in VALID_OBJECTIVES:
        raise SelectableOutputError(f"Objective `{objective}` unsupported for selectable inference predictions.")
    order = (PREDICTED_LABEL, LABELS, PROBABILITY, PROBABILITIES, RAW_SCORE, RAW_SCORES, PREDICTED_SCORE)
    valid = [k for k in order if k in keys and k in VALID_OBJECTIVES[objective]]  # the container's key order
    invalid = [k for k in dict.fromkeys(keys) if k not in VALID_OBJECTIVES[objective]]
    rows = []
    for raw in predictions:
        row = {key: _value(key, objective, num_class, np.asarray(raw)) for key in valid}
        row.update(dict.fromkeys(invalid, math.nan))
        rows.append(row)
    return rows


def encode(rows: list[dict[str, Any]], keys: list[str], accept: str, batch: bool) -> bytes:
    """The selected predictions in ``accept`` (json, jsonlines, recordio-protobuf or csv)."""
    if accept == "application/json":
        return json.dumps({"predictions": rows}).encode()
    if accept == "application/jsonlines":
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    if accept == "application/x-recordio-protobuf":
        return _recordio(rows)
    if accept == "text/csv":
        lines = [",".join(f'"{row[k]}"' if isinstance(row[k], list) else str(row[k]) for k in keys) for row in rows]
        return ("\n".join(lines) + ("\n" if batch else "")).encode()
    raise SelectableOutputError(f"Cannot encode selected predictions into accept type '{accept}'.")


def _recordio(rows: list[dict[str, Any]]) -> bytes:
    from opensage.algorithms import recordio

    record = recordio.record_class()()
    parts = []
    for row in rows:
        record.Clear()
        for key, value in row.items():
            record.label[key].float32_tensor.values.extend(value if isinstance(value, list) else [value])
        parts.append(recordio.frame(record.SerializeToString()))
    return b"".join(parts)
