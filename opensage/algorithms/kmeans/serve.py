"""K-means inference: ``closest_cluster`` (0-based index) and ``distance_to_cluster`` (Euclidean distance).

Requests: ``text/csv``, ``application/json``, ``application/jsonlines``, ``application/x-recordio-protobuf``.
Responses (Accept; absent = ``application/json``): JSON ``{"predictions": [{"closest_cluster": 1.0,
"distance_to_cluster": 3.0}]}``, JSON Lines, recordio-protobuf (``label["closest_cluster"]``,
``label["distance_to_cluster"]``), CSV ``cluster,distance`` per line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from opensage.algorithms import firstparty, formats
from opensage.algorithms.kmeans.train import ALGORITHM, squared_distances

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE, formats.CSV_TYPE)


class KMeansModel:
    def __init__(self, centroids: np.ndarray, feature_dim: int) -> None:
        self.centroids = centroids
        self.feature_dim = feature_dim

    def outputs(self, features: object) -> dict[str, np.ndarray]:
        distances = squared_distances(features, self.centroids)
        closest = distances.argmin(axis=1)
        return {"closest_cluster": closest.astype(np.float64),
                "distance_to_cluster": np.sqrt(distances[np.arange(len(closest)), closest])}


def load(model_dir: str | Path) -> KMeansModel:
    arrays, meta = firstparty.load_state(Path(model_dir), ALGORITHM)
    return KMeansModel(arrays["centroids"], int(meta["feature_dim"]))


def predict(model: KMeansModel, payload: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    response_type, _ = formats.choose_accept(accept, ACCEPTS)
    features = formats.fit_width(formats.parse_request(payload, content_type), model.feature_dim)
    outputs = model.outputs(features)
    if not np.all(np.isfinite(outputs["distance_to_cluster"])):
        raise formats.InferenceError("the request has values that are not finite numbers")
    body = formats.encode_response(outputs, response_type,
                                   csv_columns=("closest_cluster", "distance_to_cluster"))
    return body, response_type
