"""Wire -> (operation, params) for the protocols we serve, driven by botocore's operation models.

* json (AWS JSON 1.1): ``X-Amz-Target: <targetPrefix>.<Operation>``, JSON body (sagemaker, logs)
* rest-json: operation chosen by method + requestUri; members from uri/querystring/header/payload (runtime)
* query: form body ``Action=...&Version=...`` (sts)

Keys stay PascalCase exactly as the model names them. Timestamps become aware datetimes, blobs bytes.

Nothing a client sends may end in a 500 (boto3 retries those): a body that is not a document of the protocol
(not JSON / CBOR, invalid UTF-8, ``NaN`` literals, nested deeper than ``MAX_DEPTH``, lone surrogates) is a
``SerializationException``; a well-formed document with a bad member value (a timestamp out of range) is left
to ``validate``, which names the member.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote

from botocore.model import OperationModel, Shape

from opensage.api.spec import service_model
from opensage.errors import ServiceError, UnknownOperation, ValidationException


class SerializationException(ServiceError):
    code = "SerializationException"


class MalformedQueryString(ServiceError):
    """The query protocol's spelling of a body that cannot be read (AWS's common error for query APIs)."""

    code = "MalformedQueryString"


# Deepest nesting a request document may have. botocore's deepest SageMaker input is ~12 levels; recursive
# shapes (SearchExpression) are far shallower in practice. Parsing, decode() and validate() recurse once or
# twice per level, so this keeps every request far from Python's recursion limit (1000).
MAX_DEPTH = 64
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _refuse_constant(name: str) -> Any:
    raise SerializationException(f"Request body is not valid JSON: {name} is not a JSON number.")


def load_json(body: bytes) -> Any:
    """Bytes -> JSON value, or SerializationException: never RecursionError / UnicodeDecodeError / NaN."""
    try:
        # Strict UTF-8 first: json.loads(bytes) would accept UTF-16/32 and encoded surrogates ("surrogatepass").
        raw = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except RecursionError:
        raise SerializationException(f"Request body is nested deeper than {MAX_DEPTH} levels.") from None
    except ValueError as e:
        raise SerializationException(f"Request body is not valid JSON: {e}") from None
    # Cheap pre-checks keep the walk off ordinary requests: depth needs that many brackets, a lone surrogate
    # an escape (raw surrogates are invalid UTF-8 and already refused).
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH or b"\\u" in body:
        check_document(raw)
    return raw


def check_document(raw: Any) -> None:
    """Refuse documents nested deeper than MAX_DEPTH or holding strings that are not Unicode text
    (lone surrogates cannot be stored or encoded). Iterative: a hostile document cannot exhaust the stack."""
    stack: list[tuple[Any, int]] = [(raw, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise SerializationException("Request body holds a string that is not valid Unicode text.")
        elif isinstance(value, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise SerializationException(f"Request body is nested deeper than {MAX_DEPTH} levels.")
            items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
            for key, item in items:
                if isinstance(key, str):
                    stack.append((key, depth + 1))
                stack.append((item, depth + 1))


@dataclass
class ParsedRequest:
    service: str
    operation: OperationModel
    params: dict[str, Any]


def _timestamp(value: Any) -> datetime:
    """Epoch seconds (number or numeric string) or ISO 8601 -> aware datetime; ValueError for anything else,
    including values outside datetime's range (``1e308`` raises OverflowError / OSError in fromtimestamp)."""
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            try:
                return datetime.fromtimestamp(float(value), UTC)
            except ValueError:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (OverflowError, OSError) as e:
        raise ValueError(f"timestamp out of range: {value!r}") from e
    raise ValueError(f"not a timestamp: {value!r}")


def decode(value: Any, shape: Shape | None) -> Any:
    """JSON-decoded value -> Python value by shape (timestamps, blobs); leaves type errors to validate."""
    if shape is None or value is None:
        return value
    kind = shape.type_name
    try:
        if kind == "structure" and isinstance(value, dict):
            members = shape.members
            return {k: decode(v, members.get(k)) for k, v in value.items()}
        if kind == "list" and isinstance(value, list):
            return [decode(v, shape.member) for v in value]
        if kind == "map" and isinstance(value, dict):
            return {k: decode(v, shape.value) for k, v in value.items()}
        if kind == "timestamp":
            return _timestamp(value)
        if kind == "blob" and isinstance(value, str):
            return base64.b64decode(value)
    except (ValueError, TypeError):
        return value  # validate() reports it with the field's path
    return value


def parse_json_protocol(service: str, target: str, body: bytes) -> ParsedRequest:
    model = service_model(service)
    prefix, _, name = target.partition(".")
    if prefix != model.metadata.get("targetPrefix") or not name:
        raise UnknownOperation(f"Unrecognized X-Amz-Target header: {target!r}")
    if name not in model.operation_names:
        raise UnknownOperation(f"Operation {name} is not part of the {model.service_id} API.")
    op = model.operation_model(name)
    raw = load_json(body or b"{}")
    if not isinstance(raw, dict):
        raise SerializationException("Request body must be a JSON object.")
    return ParsedRequest(service, op, decode(raw, op.input_shape) or {})


@cache
def _rest_routes(service: str) -> list[tuple[str, re.Pattern[str], OperationModel]]:
    model = service_model(service)
    routes = []
    for name in model.operation_names:
        op = model.operation_model(name)
        http = op.http
        path = http["requestUri"].split("?")[0]
        # re.escape turns "{Name}" / "{Key+}" into "\\{Name\\}" / "\\{Key\\+\\}": make each a named group.
        rx = re.sub(r"\\\{(\w+)(?:\\\+)?\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+)", re.escape(path))
        routes.append((http["method"], re.compile(rx + "$"), op))
    return routes


@dataclass(frozen=True)
class _RestPlan:
    """Where each input member of a rest-json operation comes from, worked out once per operation."""

    bound: tuple[tuple[str, str, str, Shape], ...]  # (member, location, wire name, shape) in member order
    payload: str | None
    has_shape: bool


@cache
def _rest_plan(op: OperationModel) -> _RestPlan:
    shape = op.input_shape
    if shape is None:
        return _RestPlan((), None, False)
    bound = []
    for name, member in shape.members.items():
        loc = member.serialization.get("location")
        if loc in ("uri", "querystring", "header"):
            wire = member.serialization.get("name", name)
            bound.append((name, loc, wire.lower() if loc == "header" else wire, member))
    return _RestPlan(tuple(bound), shape.serialization.get("payload"), True)


def parse_rest_json(service: str, method: str, path: str, query: str, headers: dict[str, str],
                    body: bytes) -> ParsedRequest:
    found = next(((op, m) for verb, rx, op in _rest_routes(service)
                  if verb == method and (m := rx.match(path))), None)
    if found is None:
        raise UnknownOperation(f"No {service} operation matches {method} {path}")
    op, m = found
    params: dict[str, Any] = {}
    plan = _rest_plan(op)
    groups = m.groupdict()
    qs = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    lower = {k.lower(): v for k, v in headers.items()}
    for name, loc, wire, member in plan.bound:
        if loc == "header":
            if wire in lower:
                params[name] = _scalar(lower[wire], member)
        elif loc == "uri":
            if wire in groups:
                params[name] = unquote(groups[wire])
        elif wire in qs:
            params[name] = _scalar(qs[wire], member)
    shape = op.input_shape
    if plan.payload:
        member = shape.members[plan.payload]
        if member.type_name == "blob":
            params[plan.payload] = body
        elif member.type_name == "string":
            try:
                params[plan.payload] = body.decode()
            except UnicodeDecodeError:
                raise SerializationException("Request body is not valid UTF-8 text.") from None
        elif body:
            params[plan.payload] = decode(load_json(body), member)
    elif plan.has_shape and body:
        raw = load_json(body)
        if not isinstance(raw, dict):
            raise SerializationException("Request body must be a JSON object.")
        params.update(decode(raw, shape))
    return ParsedRequest(service, op, params)


def _scalar(text: str, shape: Shape) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
        if kind == "boolean":
            return text.lower() == "true"
        if kind == "timestamp":
            return _timestamp(text)
    except ValueError:  # includes out-of-range timestamps (see _timestamp)
        raise ValidationException(f"Value '{text}' is not a valid {kind}.") from None
    return text


def parse_query_protocol(service: str, body: bytes, query: str) -> ParsedRequest:
    """Form-encoded Action/Version with flat scalar members (enough for STS's calls)."""
    try:
        text = body.decode() if body else query
        form = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except UnicodeError:
        raise MalformedQueryString("The request body is not valid UTF-8 form data.") from None
    name = form.pop("Action", "")
    model = service_model(service)
    if name not in model.operation_names:
        raise UnknownOperation(f"Could not find operation {name!r} for version {form.get('Version')!r}.")
    op = model.operation_model(name)
    form.pop("Version", None)
    shape = op.input_shape
    params: dict[str, Any] = {}
    lists: dict[str, list[tuple[int, str]]] = {}
    for key, value in form.items():
        name, _, rest = key.partition(".")
        member = shape.members.get(name) if shape else None
        if member is None:
            continue
        if member.type_name == "list" and rest.startswith("member."):
            # Flat lists of scalars: Name.member.1=a&Name.member.2=b
            index = rest.removeprefix("member.")
            if index.isdigit():
                lists.setdefault(name, []).append((int(index), value))
        elif not rest:
            params[name] = _scalar(value, member)
    for name, items in lists.items():
        params[name] = [_scalar(v, shape.members[name].member) for _, v in sorted(items)]
    return ParsedRequest(service, op, params)
