"""Factorization machines hyperparameters (DG fact-machines-hyperparameters; the SDK's
``FactorizationMachines`` sends these plus feature_dim and mini_batch_size)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, parse_hyperparameters, require

TERMS = ("bias", "linear", "factors")
INIT_METHODS = ("normal", "uniform", "constant")
_DEFAULTS = {"bias": (0.01, 0.1, 0.01), "linear": (0.01, 0.001, 0.001), "factors": (0.001, 0.0001, 0.00001)}


def _term_specs(term: str) -> tuple[Param, ...]:
    sigma, lr, wd = _DEFAULTS[term]
    return (Param(f"{term}_init_method", "enum", default="normal", choices=INIT_METHODS),
            Param(f"{term}_init_scale", "float", low=0.0),
            Param(f"{term}_init_sigma", "float", default=sigma, low=0.0),
            Param(f"{term}_init_value", "float"),
            Param(f"{term}_lr", "float", default=lr, low=0.0),
            Param(f"{term}_wd", "float", default=wd, low=0.0))


SPECS: tuple[Param, ...] = (
    Param("feature_dim", "int", required=True, low=1, high=10_000_000),
    Param("num_factors", "int", required=True, low=1, high=1000),
    Param("predictor_type", "enum", required=True, choices=("binary_classifier", "regressor")),
    Param("epochs", "int", default=1, low=1),
    Param("mini_batch_size", "int", default=1000, low=1),
    Param("clip_gradient", "float", low=0.0, low_open=True),
    Param("eps", "float", default=1e-8, low=0.0, low_open=True),
    Param("rescale_grad", "float", low=0.0, low_open=True),
    *(spec for term in TERMS for spec in _term_specs(term)),
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    hp = parse_hyperparameters(raw, SPECS)
    for term in TERMS:
        method = hp[f"{term}_init_method"]
        if method == "uniform":
            require(hp, f"{term}_init_scale", f"{term}_init_method is uniform")
        elif method == "constant":
            require(hp, f"{term}_init_value", f"{term}_init_method is constant")
    return hp
