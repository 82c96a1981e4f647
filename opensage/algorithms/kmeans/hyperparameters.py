"""K-means hyperparameters (DG k-means-api-config; the SDK's ``KMeans`` also sends ``force_dense``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, parse_hyperparameters

INIT_METHODS = ("random", "kmeans++")
SPECS: tuple[Param, ...] = (
    Param("k", "int", required=True, low=1),
    Param("feature_dim", "int", required=True, low=1),
    Param("mini_batch_size", "int", default=5000, low=1),
    Param("init_method", "enum", default="random", choices=INIT_METHODS),
    Param("extra_center_factor", "int", low=1, auto=True),
    Param("local_lloyd_max_iter", "int", default=300, low=1),
    Param("local_lloyd_tol", "float", default=0.0001, low=0.0, high=1.0),
    Param("local_lloyd_init_method", "enum", default="kmeans++", choices=INIT_METHODS),
    Param("local_lloyd_num_trials", "int", low=1, auto=True),
    Param("half_life_time_size", "int", default=0, low=0),
    Param("epochs", "int", default=1, low=1),
    Param("eval_metrics", "list", default=["msd"], choices=("msd", "ssd")),
    Param("force_dense", "bool", default=True),
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    return parse_hyperparameters(raw, SPECS)
