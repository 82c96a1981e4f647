"""LDA inference: each document's ``topic_mixture`` (proportions over the topics, summing to 1).

Requests: ``text/csv``, ``application/json``, ``application/jsonlines``, ``application/x-recordio-protobuf``
(word counts, dense or sparse). Responses (Accept; absent = ``application/json``): JSON ``{"predictions":
[{"topic_mixture": [...]}]}``, JSON Lines, recordio-protobuf (``label["topic_mixture"]``).
"""

from __future__ import annotations

from pathlib import Path

from opensage.algorithms import firstparty, formats
from opensage.algorithms.lda.model import ALGORITHM, LDAModel

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE, formats.RECORDIO_TYPE)


def load(model_dir: str | Path) -> LDAModel:
    return LDAModel.from_state(*firstparty.load_state(Path(model_dir), ALGORITHM))


def predict(model: LDAModel, payload: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
    response_type, _ = formats.choose_accept(accept, ACCEPTS)
    features = formats.parse_word_counts(payload, content_type, model.feature_dim, "LDA")
    return formats.encode_response({"topic_mixture": model.topic_mixture(features)}, response_type), response_type
