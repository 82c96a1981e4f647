"""Factorization machines inference: ``score`` (and ``predicted_label`` for a binary classifier).

Requests: ``application/json`` and ``application/x-recordio-protobuf`` (DG fact-machines; dense or sparse),
also ``application/jsonlines`` and ``text/csv``. Responses (Accept; absent = ``application/json``): JSON
``{"predictions": [{"score": 0.4, "predicted_label": 0}]}`` (regressor: ``score`` only), JSON Lines,
recordio-protobuf (``label["score"]``, ``label["predicted_label"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from opensage.algorithms import firstparty, formats
from opensage.algorithms.factorization_machines.model import ALGORITHM, FMModel

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE)


def load(model_dir: str | Path) -> FMModel:
    return FMModel.from_state(*firstparty.load_state(Path(model_dir), ALGORITHM))


def predict(model: FMModel, payload: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    response_type, _ = formats.choose_accept(accept, ACCEPTS)
    features = formats.fit_width(formats.parse_request(payload, content_type), model.feature_dim)
    outputs = model.outputs(features)
    if not np.all(np.isfinite(outputs["score"])):
        raise formats.InferenceError("the request has values that are not finite numbers")
    return formats.encode_response(outputs, response_type, int_keys=("predicted_label",)), response_type
