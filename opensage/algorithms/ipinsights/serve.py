"""IP Insights inference: ``dot_product`` of the entity's and the address's embeddings; ``verbose=true`` in
Accept adds ``entity_embedding`` and ``ip_embedding`` (DG ip-insights-inference-data-formats).

Requests: ``text/csv`` rows ``entity_id, ipv4_address`` (what the SDK's IPInsightsPredictor sends),
``application/json`` ``{"instances": [{"data": {"features": {"values": ["user", "1.2.3.4"]}}}, {"features":
["user", "1.2.3.4"]}]}``, ``application/jsonlines`` (one such instance per line). Responses (Accept; absent =
``application/json``): ``{"predictions": [{"dot_product": 1.2}]}`` or JSON Lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from opensage.algorithms import firstparty, formats
from opensage.algorithms.formats import InferenceError
from opensage.algorithms.ipinsights.model import ALGORITHM, IPInsightsModel, ip_integers, parse_pairs

ACCEPTS = (formats.JSON_TYPE, formats.JSONLINES_TYPE)


def load(model_dir: str | Path) -> IPInsightsModel:
    return IPInsightsModel.from_state(*firstparty.load_state(Path(model_dir), ALGORITHM))


def _pair(instance: Any) -> tuple[str, str]:
    values = instance
    if isinstance(instance, dict):
        values = instance.get("features")
        if values is None and isinstance(instance.get("data"), dict):
            values = (instance["data"].get("features") or {}).get("values")
    if not isinstance(values, list) or len(values) != 2:
        raise InferenceError('each instance needs "features" (or "data": {"features": {"values": ...}}) with '
                             "[entity_id, ipv4_address]")
    return str(values[0]), str(values[1])


def _instances(body: bytes, content_type: str | None) -> list[tuple[str, str]]:
    kind = formats.media_type(content_type) or formats.CSV_TYPE
    try:
        text = body.decode("utf-8")
        if kind == formats.CSV_TYPE:
            return list(zip(*parse_pairs(text), strict=True))
        if kind == formats.JSON_TYPE:
            doc = json.loads(text)
            instances = doc.get("instances") if isinstance(doc, dict) else doc
            if not isinstance(instances, list):
                raise InferenceError('the JSON body must be {"instances": [...]}')
            return [_pair(i) for i in instances]
        if kind in (formats.JSONLINES_TYPE, "application/json-lines", "application/x-jsonlines"):
            return [_pair(json.loads(line)) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, InferenceError):
            raise
        raise InferenceError(f"the {kind} body cannot be read: {exc}") from None
    raise InferenceError(f"Content type {content_type!r} is not supported; use text/csv, application/json or "
                         "application/jsonlines.", status=415)


def predict(model: IPInsightsModel, payload: bytes, content_type: str | None, accept: str | None,
            ) -> tuple[bytes, str]:
    response_type, params = formats.choose_accept(accept, ACCEPTS)
    pairs = _instances(bytes(payload), content_type)
    if not pairs:
        raise InferenceError("the request has no instances")
    ips, bad = ip_integers([ip for _, ip in pairs])
    if bad:
        raise InferenceError(f"instance {bad[0]}: {pairs[bad[0]][1]!r} is not an IPv4 address")
    entity, ip = model.embed([e for e, _ in pairs], ips)
    outputs = {"dot_product": np.einsum("ij,ij->i", entity, ip).astype(np.float64)}
    if params.get("verbose") == "true":
        outputs.update(entity_embedding=entity.astype(np.float64), ip_embedding=ip.astype(np.float64))
    return formats.encode_response(outputs, response_type), response_type
