"""IP Insights hyperparameters (DG ip-insights-hyperparameters; the SDK's ``IPInsights`` sends these)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, parse_hyperparameters

SPECS: tuple[Param, ...] = (
    Param("num_entity_vectors", "int", required=True, low=1, high=250_000_000),
    Param("vector_dim", "int", required=True, low=4, high=4096),
    Param("batch_metrics_publish_interval", "int", default=1000, low=1),
    Param("epochs", "int", default=10, low=1),
    Param("learning_rate", "float", default=0.001, low=1e-6, high=10.0),
    Param("mini_batch_size", "int", default=10000, low=1, high=500_000),
    Param("num_ip_encoder_layers", "int", default=1, low=0, high=100),
    Param("random_negative_sampling_rate", "int", default=1, low=0, high=500),
    Param("shuffled_negative_sampling_rate", "int", default=1, low=0, high=500),
    Param("weight_decay", "float", default=0.00001, low=0.0, high=10.0),
    Param("feature_dim", "int", low=1),  # the SDK's IPInsights sends its RecordSet's feature_dim; unused
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    return parse_hyperparameters(raw, SPECS)
