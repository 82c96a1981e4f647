"""Linear learner inference: ``load(model_dir)`` / ``predict(model, payload, content_type, accept)``.

Requests: ``text/csv`` (no label column), ``application/json``, ``application/jsonlines``,
``application/x-recordio-protobuf`` (dense or sparse). Responses (Accept; absent = ``application/json``):
JSON ``{"predictions": [{"score": 0.97, "predicted_label": 1}]}`` (multiclass: ``score`` is the list of class
probabilities; regression: ``score`` only), JSON Lines (one object per line), recordio-protobuf
(``label["score"]`` and ``label["predicted_label"]`` per record, float32).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms import firstparty, formats
from opensage.algorithms.formats import InferenceError
from opensage.algorithms.linear_learner.train import ALGORITHM, LinearModel

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE)


class LoadedModel:
    def __init__(self, model: LinearModel, feature_dim: int) -> None:
        self.model = model
        self.feature_dim = feature_dim


def load(model_dir: str | Path) -> LoadedModel:
    arrays, meta = firstparty.load_state(Path(model_dir), ALGORITHM)
    model = LinearModel(arrays["weights"], arrays["bias"], meta["predictor_type"], meta["loss"],
                        float(meta["threshold"]))
    return LoadedModel(model, int(meta["feature_dim"]))


def predict(loaded: LoadedModel, payload: bytes, content_type: str | None, accept: str | None,
            ) -> tuple[bytes, str]:
    response_type, _ = formats.choose_accept(accept, ACCEPTS)
    features = formats.fit_width(formats.parse_request(payload, content_type), loaded.feature_dim)
    outputs: dict[str, Any] = loaded.model.outputs(features)
    if not np.all(np.isfinite(np.asarray(outputs["score"]))):
        raise InferenceError("the request has values that are not finite numbers")
    return formats.encode_response(outputs, response_type, int_keys=("predicted_label",)), response_type
