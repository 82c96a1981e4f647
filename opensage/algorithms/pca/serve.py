"""PCA inference: ``projection`` of each row onto the components (ascending significance, as SageMaker's).

Requests: ``text/csv``, ``application/json``, ``application/jsonlines``, ``application/x-recordio-protobuf``.
Responses (Accept; absent = ``application/json``): JSON ``{"projections": [{"projection": [...]}]}`` (note:
not "predictions"), JSON Lines, recordio-protobuf (``label["projection"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from opensage.algorithms import firstparty, formats
from opensage.algorithms.pca.train import ALGORITHM

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE)


class PCAModel:
    def __init__(self, mean: np.ndarray, v: np.ndarray, feature_dim: int) -> None:
        self.mean, self.v, self.feature_dim = mean, v, feature_dim

    def project(self, features: object) -> np.ndarray:
        return np.asarray(features @ self.v) - self.mean @ self.v


def load(model_dir: str | Path) -> PCAModel:
    arrays, meta = firstparty.load_state(Path(model_dir), ALGORITHM)
    return PCAModel(arrays["mean"], arrays["v"], int(meta["feature_dim"]))


def predict(model: PCAModel, payload: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    response_type, _ = formats.choose_accept(accept, ACCEPTS)
    features = formats.fit_width(formats.parse_request(payload, content_type), model.feature_dim)
    projection = model.project(features)
    if not np.all(np.isfinite(projection)):
        raise formats.InferenceError("the request has values that are not finite numbers")
    return formats.encode_response({"projection": projection}, response_type, json_key="projections"), response_type
