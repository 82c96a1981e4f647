"""NTM hyperparameters (DG ntm_hyperparameters; the SDK's ``NTM`` sends encoder_layers as a JSON list)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, hyperparameter_error, parse_hyperparameters

SPECS: tuple[Param, ...] = (
    Param("feature_dim", "int", required=True, low=1),
    Param("num_topics", "int", required=True, low=2, high=1000),
    Param("batch_norm", "bool", default=False),
    Param("clip_gradient", "float", low=1e-3),
    Param("encoder_layers", "str", default="auto"),
    Param("encoder_layers_activation", "enum", default="sigmoid", choices=("sigmoid", "tanh", "relu")),
    Param("epochs", "int", default=50, low=1, high=100),
    Param("learning_rate", "float", default=0.001, low=1e-6, high=1.0),
    Param("mini_batch_size", "int", default=256, low=1, high=10000),
    Param("num_patience_epochs", "int", default=3, low=1, high=10),
    Param("optimizer", "enum", default="adadelta", choices=("sgd", "adam", "adagrad", "rmsprop", "adadelta")),
    Param("rescale_gradient", "float", default=1.0, low=1e-3, high=1.0),
    Param("sub_sample", "float", default=1.0, low=0.0, high=1.0, low_open=True),
    Param("tolerance", "float", default=0.001, low=1e-6, high=0.1),
    Param("weight_decay", "float", default=0.0, low=0.0, high=1.0),
)


def _layers(text: str, num_topics: int) -> list[int]:
    if text.strip().lower() == "auto":  # DG: two layers of 3 x and 2 x num_topics
        return [3 * num_topics, 2 * num_topics]
    try:
        value = json.loads(text) if text.strip().startswith("[") else [int(v) for v in text.split(",") if v.strip()]
        sizes = [int(v) for v in value]
    except (ValueError, TypeError):
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise hyperparameter_error(f"{text!r} is not a valid value for hyperparameter 'encoder_layers': expected "
                                   "auto or a comma separated list of positive integers.")
    return sizes


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    hp = parse_hyperparameters(raw, SPECS)
    hp["encoder_layers"] = _layers(hp["encoder_layers"], hp["num_topics"])
    return hp
