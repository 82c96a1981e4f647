"""ASGI routes only: authenticate, pick the protocol, hand over to api/, write the wire response."""

from __future__ import annotations

import logging
from urllib.parse import unquote

from starlette.datastructures import URL
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from opensage.api import auth, cbor_protocol, parser, serializer
from opensage.api.dispatch import Dispatcher, RequestContext
from opensage.credentials import CredentialAuthority
from opensage.errors import AccessDenied, InternalFailure, ServiceError, UnknownOperation

log = logging.getLogger(__name__)

JSON_TARGETS = {"SageMaker": "sagemaker", "Logs_20140328": "logs",
                "AnyScaleFrontendService": "application-autoscaling",
                "GraniteServiceVersion20100801": "cloudwatch"}
XMLNS = {"sts": "https://sts.amazonaws.com/doc/2011-06-15/", "iam": "https://iam.amazonaws.com/doc/2010-05-08/"}
AMZ_JSON = "application/x-amz-json-1.1"


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    return raw.decode() if raw else request.url.path


def build_routes(dispatcher: Dispatcher, authority: CredentialAuthority) -> list[Route]:
    # TODO(issue 7 item 1/3): verify against the authority (temporary credentials, session tokens).
    credentials = {authority.root.access_key: authority.root.secret_key}

    async def authenticate(request: Request, body: bytes) -> auth.SignedIdentity:
        return auth.verify(request.method, _raw_path(request), request.scope.get("query_string", b"").decode(),
                           dict(request.headers), body, credentials)

    async def control_plane(request: Request) -> Response:
        body = await request.body()
        ctx = RequestContext()
        target = request.headers.get("x-amz-target")
        protocol = "json" if target else "query"
        service = JSON_TARGETS.get((target or "").partition(".")[0], "") if target else "sts"
        try:
            ident = await authenticate(request, body)
            ctx.access_key, ctx.region = ident.access_key, ident.region
            if protocol == "json":
                if not service:
                    raise UnknownOperation(f"Unrecognized X-Amz-Target header: {target!r}")
                req = parser.parse_json_protocol(service, target, body)
            else:
                service = ident.service if ident.service in XMLNS else "sts"
                req = parser.parse_query_protocol(service, body, request.url.query)
            result = await dispatcher.dispatch_async(ctx, req)
            if protocol == "json":
                return Response(serializer.json_response_body(req.operation, result), 200,
                                {"x-amzn-RequestId": ctx.request_id}, media_type=AMZ_JSON)
            return Response(serializer.query_response_body(req.operation, result, ctx.request_id,
                                                           XMLNS[service]), 200, media_type="text/xml")
        except ServiceError as err:
            return _error(err, ctx, protocol, service)
        except Exception:
            log.exception("unexpected error (request %s)", ctx.request_id)
            return _error(InternalFailure(f"Internal error (request id {ctx.request_id})."), ctx, protocol)

    async def rpc_v2_cbor(request: Request) -> Response:
        body = await request.body()
        ctx = RequestContext()
        service = cbor_protocol.service_for_prefix(request.path_params["prefix"])
        try:
            if service is None:
                raise UnknownOperation(f"No service answers RPC v2 CBOR as {request.path_params['prefix']!r}.")
            ident = await authenticate(request, body)
            ctx.access_key, ctx.region = ident.access_key, ident.region
            req = cbor_protocol.parse_request(service, request.path_params["operation"], body)
            status, headers, payload = cbor_protocol.response(req.operation, await dispatcher.dispatch_async(ctx, req))
        except ServiceError as err:
            status, headers, payload = cbor_protocol.error_response(service, err)
        except Exception:
            log.exception("unexpected error (request %s)", ctx.request_id)
            err = InternalFailure(f"Internal error (request id {ctx.request_id}).")
            status, headers, payload = cbor_protocol.error_response(service, err)
        headers["x-amzn-RequestId"] = ctx.request_id
        return Response(payload, status, headers)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return [
        Route("/endpoints/{rest:path}", RuntimeEndpoint(dispatcher, credentials), methods=["POST"]),
        Route("/_opensage/health", health, methods=["GET"]),
        Route("/service/{prefix}/operation/{operation}", rpc_v2_cbor, methods=["POST"]),
        Route("/", control_plane, methods=["POST"]),
    ]


class RuntimeEndpoint:
    """POST /endpoints/... (SageMaker Runtime, rest-json) as a plain ASGI app: the InvokeEndpoint hot path.

    Same steps and answers as the other routes (SigV4 check, parse, dispatch, serialize, ``_error``), minus
    Starlette's per-request Request object and wrappers: the scope's headers, path and body are read
    directly, as ``Request`` would present them.
    """

    def __init__(self, dispatcher: Dispatcher, credentials: dict[str, str]) -> None:
        self.dispatcher = dispatcher
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        ctx = RequestContext()
        try:
            method, raw_path, headers = scope["method"], _scope_raw_path(scope), _header_dict(scope["headers"])
            ident = auth.verify(method, raw_path, scope.get("query_string", b"").decode(), headers, body,
                                self.credentials)
            ctx.access_key, ctx.region = ident.access_key, ident.region
            req = parser.parse_rest_json("sagemaker-runtime", method, unquote(raw_path), _url_query(scope),
                                         headers, body)
            result = await self.dispatcher.dispatch_async(ctx, req)
            status, out_headers, payload = serializer.rest_json_response(req.operation, result)
            out_headers["x-amzn-RequestId"] = ctx.request_id
            response = Response(payload, status, out_headers)
        except ServiceError as err:
            response = _error(err, ctx, "rest-json")
        await response(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    """The whole request body, as ``Request.body()`` reads it (ClientDisconnect if the client went away)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """``dict(request.headers)``: names as the server gives them (lower-case), a repeated name's first value."""
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1")
        if key not in out:
            out[key] = value.decode("latin-1")
    return out


def _scope_raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode() if raw else URL(scope=scope).path


def _url_query(scope: Scope) -> str:
    """``request.url.query`` without building the URL in the usual case (no query string, plain path)."""
    path = scope["path"]
    if scope.get("query_string") or "?" in path or "#" in path:
        return URL(scope=scope).query
    return ""


def _error(err: ServiceError, ctx: RequestContext, protocol: str, service: str | None = None) -> Response:
    headers = {"x-amzn-RequestId": ctx.request_id}
    if protocol == "json" and service:
        headers.update(cbor_protocol.modeled_error(service, err)[1])  # query-compatible services' error code
    if isinstance(err, AccessDenied) or err.status >= 500:
        log.info("%s %s: %s", err.status, err.code, err.message)
    if protocol == "query":
        return Response(serializer.query_error_body(err, ctx.request_id), err.status, headers,
                        media_type="text/xml")
    if protocol == "rest-json":
        headers["x-amzn-ErrorType"] = err.code
        return Response(serializer.json_error_body(err), err.status, headers, media_type="application/json")
    return Response(serializer.json_error_body(err), err.status, headers, media_type=AMZ_JSON)
