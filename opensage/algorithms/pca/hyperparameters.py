"""PCA hyperparameters (DG PCA-reference; the SDK's ``PCA`` descriptors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, parse_hyperparameters

SPECS: tuple[Param, ...] = (
    Param("feature_dim", "int", required=True, low=1),
    Param("mini_batch_size", "int", required=True, low=1),
    Param("num_components", "int", required=True, low=1),
    Param("algorithm_mode", "enum", default="regular", choices=("regular", "randomized")),
    Param("subtract_mean", "bool", default=True),
    Param("extra_components", "int", default=-1, low=-1),
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    return parse_hyperparameters(raw, SPECS)
