"""NTM inference: each document's ``topic_weights`` (softmax of the encoder mean; sums to 1).

Requests: ``text/csv``, ``application/json``, ``application/jsonlines``, ``application/x-recordio-protobuf``
(word counts, dense or sparse). Responses (Accept; absent = ``application/json``): JSON ``{"predictions":
[{"topic_weights": [...]}]}``, JSON Lines, recordio-protobuf (``label["topic_weights"]``).
"""

from __future__ import annotations

from pathlib import Path

from opensage.algorithms import firstparty, formats
from opensage.algorithms.ntm.model import ALGORITHM, NTMModel

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE)


def load(model_dir: str | Path) -> NTMModel:
    return NTMModel.from_state(*firstparty.load_state(Path(model_dir), ALGORITHM))


def predict(model: NTMModel, payload: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    response_type, _ = formats.choose_accept(accept, ACCEPTS)
    features = formats.parse_word_counts(payload, content_type, model.feature_dim, "NTM")
    return formats.encode_response({"topic_weights": model.topic_weights(features)}, response_type), response_type
