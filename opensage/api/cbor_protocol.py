"""Smithy RPC v2 CBOR, the protocol current botocore speaks to services that list it first (CloudWatch).

What botocore sends (``serialize.RpcV2CBORSerializer``): ``POST /service/<targetPrefix>/operation/<Op>``,
headers ``smithy-protocol: rpc-v2-cbor``, ``Content-Type`` / ``Accept: application/cbor``, and for services
with the ``awsQueryCompatible`` trait ``x-amzn-query-mode: true``; the body is one CBOR map of the input
shape's members, timestamps as tag 1 epoch seconds (int or float), blobs as byte strings.

What it expects back (``parsers.RpcV2CBORParser``): a CBOR map of the output shape's members on 200; on an
error a CBOR map with ``__type`` (``namespace#ShapeName``; botocore keeps what follows ``#``) and
``message``. For query-compatible services ``x-amzn-query-error: <Code>;<Sender|Receiver>`` carries the
legacy error code, which is what ``client.exceptions.<Shape>`` matches on.

Driven only by botocore's service models: nothing here knows CloudWatch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

import cbor2
from botocore.model import OperationModel, ServiceModel, Shape

from opensage.api.parser import ParsedRequest, SerializationException, check_document, decode
from opensage.api.spec import service_model
from opensage.errors import ServiceError, UnknownOperation

CBOR = "application/cbor"
PROTOCOL_HEADERS = {"smithy-protocol": "rpc-v2-cbor"}
# Services we answer over RPC v2 CBOR (botocore names); routed by their targetPrefix.
RPC_V2_CBOR_SERVICES = ("cloudwatch",)


@cache
def _services_by_prefix() -> dict[str, str]:
    return {service_model(name).metadata["targetPrefix"]: name for name in RPC_V2_CBOR_SERVICES}


def service_for_prefix(prefix: str) -> str | None:
    """The botocore service name whose targetPrefix is ``prefix`` (the path's ``/service/<prefix>``)."""
    return _services_by_prefix().get(prefix)


def parse_request(service: str, operation: str, body: bytes) -> ParsedRequest:
    model = service_model(service)
    if operation not in model.operation_names:
        raise UnknownOperation(f"Operation {operation} is not part of the {model.service_id} API.")
    op = model.operation_model(operation)
    try:
        raw = cbor2.loads(body) if body else {}
    except Exception as e:  # noqa: BLE001 - whatever cbor2 cannot read (tags, lengths, depth) is the client's
        raise SerializationException(f"Request body is not valid CBOR: {e}") from None
    if not isinstance(raw, dict):
        raise SerializationException("Request body must be a CBOR map of the operation's input members.")
    check_document(raw)  # depth (cbor2 allows 400 levels; decode/validate recurse per level)
    return ParsedRequest(service, op, decode(_plain(raw), op.input_shape) or {})


def _plain(value: Any) -> Any:
    """CBOR-decoded value -> what ``parser.decode`` takes: tags unwrapped (tag 1 is already a datetime)."""
    if isinstance(value, cbor2.CBORTag):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_cbor_value(value: Any, shape: Shape | None) -> Any:
    """Python value -> CBOR-ready value by shape; only modeled members leave, None members are dropped."""
    if value is None or shape is None:
        return value
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            item = value.get(name)
            if item is not None:
                out[member.serialization.get("name", name)] = to_cbor_value(item, member)
        return out
    if kind == "list":
        return [to_cbor_value(v, shape.member) for v in value]
    if kind == "map":
        return {k: to_cbor_value(v, shape.value) for k, v in value.items()}
    if kind == "timestamp":
        return cbor2.CBORTag(1, _epoch(value))
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long"):
        return int(value)
    if kind == "blob" and isinstance(value, str):
        return value.encode()
    return value


def _epoch(value: Any) -> float | int:
    if isinstance(value, datetime):
        t = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    else:
        t = float(value)
    return int(t) if t == int(t) else round(t, 3)


def response(op: OperationModel, result: dict[str, Any] | None) -> tuple[int, dict[str, str], bytes]:
    body = cbor2.dumps(to_cbor_value(result or {}, op.output_shape) or {})
    return 200, {**PROTOCOL_HEADERS, "Content-Type": CBOR}, body


def _error_shape(model: ServiceModel, code: str) -> Shape | None:
    for shape in model.error_shapes:
        if shape.name == code or shape.metadata.get("error", {}).get("code") == code:
            return shape
    return None


def modeled_error(service: str | None, err: ServiceError) -> tuple[str, dict[str, str]]:
    """(``__type``, extra headers) for an error: the service's modeled error shape when one matches the code,
    and for ``awsQueryCompatible`` services the ``x-amzn-query-error: <Code>;<Sender|Receiver>`` header that
    botocore maps to ``client.exceptions.<Shape>`` (used by the JSON protocol too)."""
    model = service_model(service) if service else None
    if model is None:
        return err.code, {}
    shape = _error_shape(model, err.code)
    type_name, query_code = err.code, err.code
    if shape is not None:
        type_name = shape.name
        query_code = shape.metadata.get("error", {}).get("code", shape.name)
    headers = {}
    if "awsQueryCompatible" in model.metadata:
        headers["x-amzn-query-error"] = f"{query_code};{'Sender' if err.sender_fault else 'Receiver'}"
    return f"com.amazonaws.{model.endpoint_prefix}#{type_name}", headers


def error_response(service: str | None, err: ServiceError) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of an RPC v2 CBOR error."""
    type_name, extra = modeled_error(service, err)
    body: dict[str, Any] = {"__type": type_name, "message": err.message}
    body.update(err.fields)
    return err.status, {**PROTOCOL_HEADERS, "Content-Type": CBOR, **extra}, cbor2.dumps(body)
