"""Random Cut Forest inference: an anomaly ``score`` per row (about 1 for inliers, higher for anomalies).

Requests: ``text/csv``, ``application/json``, ``application/jsonlines``, ``application/x-recordio-protobuf``.
Responses (Accept; absent = ``application/json``): JSON ``{"scores": [{"score": 0.02}]}`` (note: "scores"),
JSON Lines ``{"score": 0.02}``, recordio-protobuf (``label["score"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from opensage.algorithms import firstparty, formats
from opensage.algorithms.randomcutforest.forest import Forest
from opensage.algorithms.randomcutforest.train import ALGORITHM

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE)


def load(model_dir: str | Path) -> Forest:
    arrays, _ = firstparty.load_state(Path(model_dir), ALGORITHM)
    return Forest.from_arrays(arrays)


def predict(model: Forest, payload: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    response_type, _ = formats.choose_accept(accept, ACCEPTS)
    features = formats.fit_width(formats.parse_request(payload, content_type), model.feature_dim)
    rows = features.toarray() if hasattr(features, "toarray") else np.asarray(features)
    if not np.all(np.isfinite(rows)):
        raise formats.InferenceError("the request has values that are not finite numbers")
    return formats.encode_response({"score": model.score(rows)}, response_type, json_key="scores"), response_type
