"""ASGI routes only: authenticate, pick the protocol, hand over to api/, write the wire response.

Every route takes the same steps, in this order, so that an unauthenticated client costs its headers and
nothing more: the signature's headers (``auth.check_headers``: Authorization, key, session token, date) →
Content-Length against the route's cap → the body, read with that cap (chunked bodies too) → the signature
over the body (``auth.check_body``) → parse → dispatch. A request refused before its body was read is
answered with ``connection: close``: the server then drops the connection instead of reading (and
discarding) whatever body the client still sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from starlette.datastructures import URL
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from opensage.api import auth, cbor_protocol, parser, serializer
from opensage.api.dispatch import Dispatcher, RequestContext
from opensage.errors import AccessDenied, InternalFailure, ServiceError, UnknownOperation, ValidationError
from opensage.server.http_limits import ThrottledLog
from opensage.services.runtime import MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)

JSON_TARGETS = {"SageMaker": "sagemaker", "Logs_20140328": "logs",
                "AnyScaleFrontendService": "application-autoscaling",
                "GraniteServiceVersion20100801": "cloudwatch",
                "AmazonSQS": "sqs"}  # served by the sqs capability (opensage/capabilities/sqs.py)
XMLNS = {"sts": "https://sts.amazonaws.com/doc/2011-06-15/", "iam": "https://iam.amazonaws.com/doc/2010-05-08/"}
AMZ_JSON = "application/x-amz-json-1.1"

# Request body caps, checked against Content-Length before reading and while reading.
# The runtime: SageMaker's synchronous InvokeEndpoint payload limit (services.runtime owns the number).
MAX_RUNTIME_BODY = MAX_PAYLOAD_BYTES
# The control plane (SageMaker, STS/IAM, Logs, CloudWatch, Application Auto Scaling): AWS's JSON / query
# front doors refuse requests of a few MB; the largest documented members we accept are ~1 MB (CloudWatch
# Logs' PutLogEvents batch of 1,048,576 bytes, PutMetricData's 1 MB, a pipeline definition), so 8 MB leaves
# room for every legitimate request (JSON escaping included) while bounding what one connection can hold.
MAX_CONTROL_BODY = 8 * 1024 * 1024
REFUSAL_LOG_INTERVAL = 10.0  # seconds between two log lines about refused (unauthenticated / too large) requests


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    return raw.decode() if raw else request.url.path


def build_routes(dispatcher: Dispatcher, authority: auth.Credentials,
                 health: Callable[[], dict[str, str]] | None = None) -> list[Route]:
    """``authority``: a ``credentials.CredentialAuthority`` (the platform's key and every live temporary
    credential). ``health``: component name -> "ok" or what is wrong; GET /_opensage/health answers 503
    unless every component is "ok". It is called on the event loop: it must not block."""

    async def control_plane(request: Request) -> Response:
        ctx = RequestContext()
        headers = dict(request.headers)  # names in lower case, as the server hands them over
        target = headers.get("x-amz-target")
        protocol = "json" if target else "query"
        service = JSON_TARGETS.get((target or "").partition(".")[0], "") if target else "sts"
        body: bytes | None = None
        try:
            pending = auth.check_headers(headers, authority)
            body = await read_body(request.receive, headers, MAX_CONTROL_BODY, _control_too_large)
            ident = auth.check_body(pending, request.method, _raw_path(request),
                                    request.scope.get("query_string", b"").decode(), headers, body)
            ctx.access_key, ctx.region, ctx.principal = ident.access_key, ident.region, ident.principal
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
            return _error(err, ctx, protocol, service, body_read=body is not None)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody reads it: the client is gone
        except Exception:
            log.exception("unexpected error (request %s, caller %s)", ctx.request_id, ctx.caller)
            return _error(InternalFailure(f"Internal error (request id {ctx.request_id})."), ctx, protocol,
                          body_read=body is not None)

    async def rpc_v2_cbor(request: Request) -> Response:
        ctx = RequestContext()
        service = cbor_protocol.service_for_prefix(request.path_params["prefix"])
        headers = dict(request.headers)
        body: bytes | None = None
        try:
            pending = auth.check_headers(headers, authority)
            body = await read_body(request.receive, headers, MAX_CONTROL_BODY, _control_too_large)
            ident = auth.check_body(pending, request.method, _raw_path(request),
                                    request.scope.get("query_string", b"").decode(), headers, body)
            ctx.access_key, ctx.region, ctx.principal = ident.access_key, ident.region, ident.principal
            if service is None:
                raise UnknownOperation(f"No service answers RPC v2 CBOR as {request.path_params['prefix']!r}.")
            req = cbor_protocol.parse_request(service, request.path_params["operation"], body)
            status, out, payload = cbor_protocol.response(req.operation, await dispatcher.dispatch_async(ctx, req))
        except ServiceError as err:
            _log_refusal(err)
            status, out, payload = cbor_protocol.error_response(service, err)
        except ClientDisconnect:
            return Response(status_code=400)
        except Exception:
            log.exception("unexpected error (request %s, caller %s)", ctx.request_id, ctx.caller)
            err = InternalFailure(f"Internal error (request id {ctx.request_id}).")
            status, out, payload = cbor_protocol.error_response(service, err)
        out["x-amzn-RequestId"] = ctx.request_id
        if body is None:
            out["connection"] = "close"
        return Response(payload, status, out)

    async def health_route(request: Request) -> Response:
        if health is None:
            return JSONResponse({"status": "ok"})
        try:
            components = dict(health())
        except Exception:
            log.exception("health check failed")
            return JSONResponse({"status": "error", "components": {}}, 503)
        ok = all(state == "ok" for state in components.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "components": components}, 200 if ok else 503)

    metrics = RestJsonEndpoint(dispatcher, authority, "sagemaker-metrics", MAX_CONTROL_BODY, _control_too_large)
    return [
        Route("/endpoints/{rest:path}", RestJsonEndpoint(dispatcher, authority), methods=["POST"]),
        Route("/_opensage/health", health_route, methods=["GET"]),
        Route("/service/{prefix}/operation/{operation}", rpc_v2_cbor, methods=["POST"]),
        Route("/", control_plane, methods=["POST"]),
        # SageMaker Metrics (rest-json, signed as "sagemaker"): what SDK v2's Run.log_metric sends
        Route("/BatchPutMetrics", metrics, methods=["PUT"]),
        Route("/BatchGetMetrics", metrics, methods=["POST"]),
    ]


class RestJsonEndpoint:
    """A rest-json service's routes as a plain ASGI app: POST /endpoints/... (SageMaker Runtime, the
    InvokeEndpoint hot path, by default) and SageMaker Metrics.

    Same steps and answers as the other routes (SigV4 check, parse, dispatch, serialize, ``_error``), minus
    Starlette's per-request Request object and wrappers: the scope's headers, path and body are read
    directly, as ``Request`` would present them.
    """

    def __init__(self, dispatcher: Dispatcher, credentials: auth.Credentials, service: str = "sagemaker-runtime",
                 max_body: int = MAX_RUNTIME_BODY, too_large: Callable[[int | None], ServiceError] | None = None
                 ) -> None:
        self.dispatcher = dispatcher
        self.credentials = credentials
        self.service = service
        self.max_body = max_body
        self.too_large = too_large or _runtime_too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx = RequestContext()
        headers = _header_dict(scope["headers"])
        body: bytes | None = None
        try:
            pending = auth.check_headers(headers, self.credentials)
            body = await read_body(receive, headers, self.max_body, self.too_large)
            method, raw_path = scope["method"], _scope_raw_path(scope)
            ident = auth.check_body(pending, method, raw_path, scope.get("query_string", b"").decode(), headers,
                                    body)
            ctx.access_key, ctx.region, ctx.principal = ident.access_key, ident.region, ident.principal
            req = parser.parse_rest_json(self.service, method, unquote(raw_path), _url_query(scope), headers, body)
            result = await self.dispatcher.dispatch_async(ctx, req)
            status, out_headers, payload = serializer.rest_json_response(req.operation, result)
            out_headers["x-amzn-RequestId"] = ctx.request_id
        except ServiceError as err:
            response = _error(err, ctx, "rest-json", body_read=body is not None)
        except ClientDisconnect:
            return  # the client went away mid-body: there is nobody to answer
        except Exception:  # as the other routes: an AWS-style InternalFailure with a request id, logged
            log.exception("unexpected error (request %s)", ctx.request_id)
            response = _error(InternalFailure(f"Internal error (request id {ctx.request_id})."), ctx, "rest-json",
                              body_read=body is not None)
        else:
            # The bytes Starlette's Response(payload, status, out_headers) would send, without building one.
            raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in out_headers.items()]
            if status >= 200 and status not in (204, 304) and all(k != b"content-length" for k, _ in raw):
                raw.append((b"content-length", b"%d" % len(payload)))
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": payload})
            return
        await response(scope, receive, send)


def runtime_endpoint(app: Any) -> RestJsonEndpoint | None:
    """The app's runtime route (``http_limits`` serves POST /endpoints/... with it directly), if it has one."""
    for route in getattr(app, "routes", None) or ():
        endpoint = getattr(route, "app", None)
        if isinstance(endpoint, RestJsonEndpoint) and getattr(route, "path", "") == "/endpoints/{rest:path}":
            return endpoint
    return None


async def read_body(receive: Receive, headers: dict[str, str], cap: int,
                    too_large: Callable[[int | None], ServiceError]) -> bytes:
    """The whole request body, refused (``too_large(size or None)``) as soon as it is known to pass ``cap``:
    from Content-Length before anything is read, else (chunked) once the bytes received pass it.
    ClientDisconnect if the client went away."""
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise too_large(int(length))
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > cap:
                    raise too_large(None)
                chunks.append(chunk)
            if not message.get("more_body", False):
                if len(chunks) == 1:
                    return chunks[0]
                return b"".join(chunks)
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()


def _runtime_too_large(size: int | None) -> ServiceError:
    # services.runtime's wording for the same limit, with the status SageMaker answers (413).
    got = f"{size}" if size is not None else f"more than {MAX_RUNTIME_BODY}"
    return ValidationError(f"Received payload of {got} bytes exceeds the maximum of {MAX_RUNTIME_BODY} bytes "
                           "for InvokeEndpoint; use batch transform or InvokeEndpointAsync for larger inputs.",
                           status=413)


def _control_too_large(size: int | None) -> ServiceError:
    got = f"{size}" if size is not None else f"more than {MAX_CONTROL_BODY}"
    return ServiceError(f"Request body of {got} bytes exceeds the maximum of {MAX_CONTROL_BODY} bytes that "
                        "this API accepts.", code="RequestEntityTooLarge", status=413)


def _header_dict(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """``dict(request.headers)``: names as the server gives them (lower-case), a repeated name's first value."""
    # Built from the last header to the first, so that a repeated name keeps its first value.
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw)}


def _scope_raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode() if raw else URL(scope=scope).path


def _url_query(scope: Scope) -> str:
    """``request.url.query`` without building the URL in the usual case (no query string, plain path)."""
    path = scope["path"]
    if scope.get("query_string") or "?" in path or "#" in path:
        return URL(scope=scope).query
    return ""


_refusals = ThrottledLog(log, REFUSAL_LOG_INTERVAL)


def _log_refusal(err: ServiceError) -> None:
    if isinstance(err, AccessDenied) or err.status == 413:
        _refusals.info("%s %s: %s", err.status, err.code, err.message)
    elif err.status >= 500:
        log.info("%s %s: %s", err.status, err.code, err.message)


def _error(err: ServiceError, ctx: RequestContext, protocol: str, service: str | None = None, *,
           body_read: bool = True) -> Response:
    """The wire error; ``body_read=False``: the request's body was not read, so the connection is closed."""
    headers = {"x-amzn-RequestId": ctx.request_id}
    if not body_read:
        headers["connection"] = "close"
    if protocol == "json" and service:
        headers.update(cbor_protocol.modeled_error(service, err)[1])  # query-compatible services' error code
    _log_refusal(err)
    if protocol == "query":
        return Response(serializer.query_error_body(err, ctx.request_id), err.status, headers,
                        media_type="text/xml")
    if protocol == "rest-json":
        headers["x-amzn-ErrorType"] = err.code
        return Response(serializer.json_error_body(err), err.status, headers, media_type="application/json")
    return Response(serializer.json_error_body(err), err.status, headers, media_type=AMZ_JSON)
