"""Python values -> wire, by output shape; ServiceError -> AWS error bodies. Only modeled members leave."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from botocore.model import OperationModel, Shape

from opensage.errors import ServiceError


def to_wire(value: Any, shape: Shape | None) -> Any:
    if value is None:
        return None
    if shape is None:
        return value
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            if member.serialization.get("location"):
                continue  # headers / status codes are not in the body
            item = value.get(name)
            if item is not None:
                out[member.serialization.get("name", name)] = to_wire(item, member)
        return out
    if kind == "list":
        return [to_wire(v, shape.member) for v in value]
    if kind == "map":
        return {k: to_wire(v, shape.value) for k, v in value.items()}
    if kind == "timestamp":
        if isinstance(value, datetime):
            return round(value.timestamp(), 3)
        return value
    if kind == "blob":
        return base64.b64encode(value).decode() if isinstance(value, bytes | bytearray) else value
    return value


def json_response_body(op: OperationModel, result: dict[str, Any] | None) -> bytes:
    return json.dumps(to_wire(result or {}, op.output_shape) or {}).encode()


def rest_json_response(op: OperationModel, result: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) for a rest-json output: header members, then payload or JSON body."""
    shape = op.output_shape
    headers: dict[str, str] = {}
    status = int(op.http.get("responseCode", 200))  # e.g. InvokeEndpointAsync answers 202
    if shape is None:
        return status, headers, b""
    payload_name = shape.serialization.get("payload")
    for name, member in shape.members.items():
        if member.serialization.get("location") == "header" and result.get(name) is not None:
            headers[member.serialization.get("name", name)] = str(result[name])
    if payload_name:
        body = result.get(payload_name, b"")
        if isinstance(body, str):
            body = body.encode()
        return status, headers, body or b""
    headers["Content-Type"] = "application/json"
    return status, headers, json.dumps(to_wire(result, shape)).encode()


def json_error_body(err: ServiceError) -> bytes:
    body = {"__type": err.code, "message": err.message, "Message": err.message}
    body.update(err.fields)
    return json.dumps(body).encode()


def _xml(value: Any, shape: Shape | None) -> str:
    if value is None:
        return ""
    if shape is not None and shape.type_name == "structure":
        return "".join(f"<{k}>{_xml(value.get(k), m)}</{k}>" for k, m in shape.members.items()
                       if value.get(k) is not None)
    if shape is not None and shape.type_name == "list":
        return "".join(f"<member>{_xml(v, shape.member)}</member>" for v in value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape(str(value))


def query_response_body(op: OperationModel, result: dict[str, Any], request_id: str, xmlns: str) -> bytes:
    name = op.name
    inner = _xml(result, op.output_shape)
    return (f'<{name}Response xmlns="{xmlns}"><{name}Result>{inner}</{name}Result>'
            f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>").encode()


def query_error_body(err: ServiceError, request_id: str) -> bytes:
    kind = "Sender" if err.sender_fault else "Receiver"
    return (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{escape(err.code)}</Code>"
            f"<Message>{escape(err.message)}</Message></Error><RequestId>{request_id}</RequestId>"
            "</ErrorResponse>").encode()
