"""LDA hyperparameters (DG lda_hyperparameters; the SDK's ``LDA`` requires mini_batch_size at fit)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, parse_hyperparameters

SPECS: tuple[Param, ...] = (
    Param("num_topics", "int", required=True, low=1),
    Param("feature_dim", "int", required=True, low=1),
    Param("mini_batch_size", "int", required=True, low=1),
    Param("alpha0", "float", default=1.0, low=0.0, low_open=True),
    Param("max_restarts", "int", default=10, low=1),
    Param("max_iterations", "int", default=1000, low=1),
    Param("tol", "float", default=1e-8, low=0.0, low_open=True),
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    return parse_hyperparameters(raw, SPECS)
