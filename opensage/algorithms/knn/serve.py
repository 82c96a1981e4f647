"""k-NN inference: ``predicted_label``; with ``verbose=true`` in Accept also ``labels`` and ``distances`` of the
k neighbours, nearest first (DG kNN-inference-formats).

Requests: ``text/csv``, ``application/json``, ``application/jsonlines``, ``application/x-recordio-protobuf``.
Responses (Accept; absent = ``application/json``): JSON ``{"predictions": [{"predicted_label": 0.0}]}``,
JSON Lines, recordio-protobuf (``label["predicted_label"]``, plus ``label["labels"]`` and
``label["distances"]`` when verbose).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from opensage.algorithms import firstparty, formats
from opensage.algorithms.knn.train import ALGORITHM, KNNModel

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE)


def load(model_dir: str | Path) -> KNNModel:
    return KNNModel.from_state(*firstparty.load_state(Path(model_dir), ALGORITHM))


def predict(model: KNNModel, payload: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    response_type, params = formats.choose_accept(accept, ACCEPTS)
    features = formats.fit_width(formats.parse_request(payload, content_type), model.feature_dim)
    values = features.data if hasattr(features, "tocsr") else features
    if not np.all(np.isfinite(values)):
        raise formats.InferenceError("the request has values that are not finite numbers")
    labels, distances = model.neighbours(features)
    outputs = {"predicted_label": model.vote(labels).astype(np.float64)}
    if params.get("verbose") == "true":
        outputs.update(distances=distances.astype(np.float64), labels=labels.astype(np.float64))
    return formats.encode_response(outputs, response_type), response_type
