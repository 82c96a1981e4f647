"""Random Cut Forest hyperparameters (DG rcf_hyperparameters; the SDK's ``RandomCutForest`` also sends
mini_batch_size)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, parse_hyperparameters

SPECS: tuple[Param, ...] = (
    Param("feature_dim", "int", required=True, low=1, high=10000),
    Param("num_trees", "int", default=100, low=50, high=1000),
    Param("num_samples_per_tree", "int", default=256, low=1, high=2048),
    Param("eval_metrics", "list", default=["accuracy", "precision_recall_fscore"],
          choices=("accuracy", "precision_recall_fscore")),
    Param("mini_batch_size", "int", default=1000, low=1),
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    return parse_hyperparameters(raw, SPECS)
