"""k-NN hyperparameters (DG kNN_hyperparameters; the SDK's ``KNN`` sends these plus feature_dim and
mini_batch_size)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opensage.algorithms.firstparty import Param, hyperparameter_error, parse_hyperparameters, require

PQ_M_VALUES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 96)
SPECS: tuple[Param, ...] = (
    Param("feature_dim", "int", required=True, low=1),
    Param("k", "int", required=True, low=1),
    Param("predictor_type", "enum", required=True, choices=("classifier", "regressor")),
    Param("sample_size", "int", required=True, low=1),
    Param("dimension_reduction_type", "enum", choices=("sign", "fjlt")),
    Param("dimension_reduction_target", "int", low=1),
    Param("index_type", "enum", default="faiss.Flat", choices=("faiss.Flat", "faiss.IVFFlat", "faiss.IVFPQ")),
    Param("index_metric", "enum", default="L2", choices=("L2", "INNER_PRODUCT", "COSINE")),
    Param("faiss_index_ivf_nlists", "int", low=1, auto=True),
    Param("faiss_index_pq_m", "int", low=1),
    Param("mini_batch_size", "int", default=5000, low=1),
)


def parse(raw: Mapping[str, Any]) -> dict[str, Any]:
    hp = parse_hyperparameters(raw, SPECS)
    if hp["dimension_reduction_type"]:
        require(hp, "dimension_reduction_target", "dimension_reduction_type is set")
        if hp["dimension_reduction_target"] >= hp["feature_dim"]:
            raise hyperparameter_error(f"dimension_reduction_target ({hp['dimension_reduction_target']}) must be "
                                       f"less than feature_dim ({hp['feature_dim']})")
    dimension = hp["dimension_reduction_target"] if hp["dimension_reduction_type"] else hp["feature_dim"]
    hp["dimension"] = dimension
    m = hp["faiss_index_pq_m"]
    if m is not None and m not in PQ_M_VALUES:
        raise hyperparameter_error(f"{str(m)!r} is not a valid value for hyperparameter 'faiss_index_pq_m': "
                                   f"expected one of {', '.join(map(str, PQ_M_VALUES))}.")
    if hp["index_type"] == "faiss.IVFPQ":
        if m is None:  # faiss's default for IVFPQ here: the largest allowed divisor up to dimension / 2
            m = max(v for v in PQ_M_VALUES if dimension % v == 0 and v <= max(1, dimension // 2))
            hp["faiss_index_pq_m"] = m
        if dimension % m:
            raise hyperparameter_error(f"faiss_index_pq_m ({m}) must divide the index dimension ({dimension}: "
                                       f"dimension_reduction_target if set, else feature_dim)")
    return hp
