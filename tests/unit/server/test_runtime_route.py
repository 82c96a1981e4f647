"""POST /endpoints/... as a raw ASGI route: same auth, errors and response headers as the Starlette routes."""

import asyncio
import json

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.applications import Starlette

from opensage.api.dispatch import Dispatcher
from opensage.credentials import CredentialAuthority
from opensage.errors import ValidationError
from opensage.server.routes import RestJsonEndpoint, build_routes
from opensage.settings import Credentials as PlatformCredentials

CREDS = {"AKID": "secret"}
BASE = "http://testserver"


class _Runtime:
    def __init__(self) -> None:
        self.seen: list[dict] = []

    async def invoke_endpoint(self, ctx, params):
        self.seen.append(dict(params, _access_key=ctx.access_key, _request_id=ctx.request_id))
        if params["EndpointName"] == "missing":
            raise ValidationError("Endpoint missing of account 123 not found.")
        if params["EndpointName"] == "crash":
            raise RuntimeError("boom")
        return {"Body": b"0.5\n", "ContentType": "text/csv", "InvokedProductionVariant": "AllTraffic",
                **({"CustomAttributes": params["CustomAttributes"]} if params.get("CustomAttributes") else {})}


@pytest.fixture()
def runtime():
    return _Runtime()


class _Client:
    """Requests through httpx's ASGI transport, one event loop per call."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                return await c.request(method, path, **kw)

        return asyncio.run(go())

    def post(self, path: str, **kw) -> httpx.Response:
        return self.request("POST", path, **kw)

    def get(self, path: str, **kw) -> httpx.Response:
        return self.request("GET", path, **kw)


@pytest.fixture()
def client(runtime):
    dispatcher = Dispatcher()
    dispatcher.register("sagemaker-runtime", runtime)
    return _Client(Starlette(routes=build_routes(dispatcher, CredentialAuthority(PlatformCredentials("AKID", "secret")))))


def _signed(path: str, body: bytes, headers: dict[str, str], secret: str = "secret") -> dict[str, str]:
    req = AWSRequest(method="POST", url=BASE + path, data=body, headers=dict(headers))
    SigV4Auth(Credentials("AKID", secret), "sagemaker", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def test_invoke_signed_request_answers_body_and_header_members(client, runtime):
    path = "/endpoints/my-ep/invocations"
    headers = _signed(path, b"1,2", {"Content-Type": "text/csv", "Accept": "text/csv",
                                     "X-Amzn-SageMaker-Custom-Attributes": "trace=1"})
    r = client.post(path, content=b"1,2", headers=headers)
    assert r.status_code == 200 and r.content == b"0.5\n"
    names = [k.decode() for k, _ in r.headers.raw]
    assert names == ["content-type", "x-amzn-invoked-production-variant", "x-amzn-sagemaker-custom-attributes",
                     "x-amzn-requestid", "content-length"]
    assert r.headers["content-type"] == "text/csv" and r.headers["content-length"] == "4"
    seen = runtime.seen[0]
    assert (seen["EndpointName"], seen["Body"], seen["Accept"], seen["_access_key"]) == ("my-ep", b"1,2",
                                                                                          "text/csv", "AKID")
    assert r.headers["x-amzn-requestid"] == seen["_request_id"]


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "MissingAuthenticationTokenException"),
    ({"Authorization": "Bearer x"}, "IncompleteSignatureException"),
])
def test_invoke_unsigned_request_is_rejected_with_error_type_header(client, runtime, headers, code):
    r = client.post("/endpoints/my-ep/invocations", content=b"1", headers=headers)
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == code
    assert r.headers["content-type"] == "application/json" and r.json()["__type"] == code
    assert "x-amzn-requestid" in r.headers and runtime.seen == []


def test_invoke_wrong_secret_is_invalid_signature(client):
    path = "/endpoints/my-ep/invocations"
    r = client.post(path, content=b"1", headers=_signed(path, b"1", {"Content-Type": "text/csv"}, secret="x"))
    assert (r.status_code, r.headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")


def test_invoke_service_error_keeps_status_and_message(client):
    path = "/endpoints/missing/invocations"
    r = client.post(path, content=b"1", headers=_signed(path, b"1", {"Content-Type": "text/csv"}))
    assert (r.status_code, r.headers["x-amzn-errortype"]) == (400, "ValidationError")
    assert json.loads(r.content)["message"] == "Endpoint missing of account 123 not found."


def test_invoke_handler_crash_is_internal_failure_500(client):
    path = "/endpoints/crash/invocations"
    r = client.post(path, content=b"1", headers=_signed(path, b"1", {"Content-Type": "text/csv"}))
    assert (r.status_code, r.headers["x-amzn-errortype"]) == (500, "InternalFailure")


def test_invoke_unknown_runtime_path_is_unknown_operation(client):
    path = "/endpoints/my-ep/other"
    r = client.post(path, content=b"", headers=_signed(path, b"", {}))
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "UnknownOperationException"


def test_endpoints_path_other_method_is_405(client):
    r = client.get("/endpoints/my-ep/invocations")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_runtime_endpoint_body_in_several_messages_is_joined(runtime):
    dispatcher = Dispatcher()
    dispatcher.register("sagemaker-runtime", runtime)
    app = RestJsonEndpoint(dispatcher, CREDS)
    path = "/endpoints/my-ep/invocations"
    signed = _signed(path, b"1,2,3", {"Content-Type": "text/csv"})
    messages = [{"type": "http.request", "body": b"1,", "more_body": True},
                {"type": "http.request", "body": b"", "more_body": True},
                {"type": "http.request", "body": b"2,3", "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in signed.items()] + [(b"host", b"testserver")],
             "scheme": "http", "server": ("testserver", 80), "root_path": ""}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"0.5\n"
    assert runtime.seen[0]["Body"] == b"1,2,3"


def test_invoke_with_temporary_credentials_reaches_the_handler_as_their_owner(runtime):
    dispatcher = Dispatcher()
    seen = []

    class _Owned(_Runtime):
        async def invoke_endpoint(self, ctx, params):
            seen.append((ctx.owner, ctx.caller))
            return {"Body": b"ok"}

    dispatcher.register("sagemaker-runtime", _Owned())
    authority = CredentialAuthority(PlatformCredentials("AKID", "secret"))
    temp = authority.issue("endpoint/ep/7")
    client = _Client(Starlette(routes=build_routes(dispatcher, authority)))
    path = "/endpoints/my-ep/invocations"
    req = AWSRequest(method="POST", url=BASE + path, data=b"1", headers={"Content-Type": "text/csv"})
    SigV4Auth(Credentials(temp.access_key_id, temp.secret_access_key, temp.session_token), "sagemaker",
              "us-east-1").add_auth(req)
    r = client.post(path, content=b"1", headers=dict(req.headers.items()))
    assert r.status_code == 200 and seen == [("endpoint/ep/7", "endpoint/ep/7")]


def test_invoke_refused_before_the_body_closes_the_connection(client):
    r = client.post("/endpoints/my-ep/invocations", content=b"1", headers={})
    assert r.status_code == 403 and r.headers["connection"] == "close"
    path = "/endpoints/my-ep/invocations"
    r = client.post(path, content=b"1", headers=_signed(path, b"1", {"Content-Type": "text/csv"}, secret="x"))
    assert r.status_code == 403 and "connection" not in r.headers  # body read: the connection may be reused


def _health_client(health) -> _Client:
    authority = CredentialAuthority(PlatformCredentials("AKID", "secret"))
    return _Client(Starlette(routes=build_routes(Dispatcher(), authority, health=health)))


def test_health_without_components_is_ok():
    r = _health_client(None).get("/_opensage/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})


def test_health_all_components_ok_is_200_and_one_down_is_503():
    r = _health_client(lambda: {"object-store": "ok", "database": "ok"}).get("/_opensage/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok", "components": {"object-store": "ok", "database": "ok"}})
    r = _health_client(lambda: {"object-store": "restarting (exit 137)", "database": "ok"}).get("/_opensage/health")
    assert r.status_code == 503 and r.json()["components"]["object-store"] == "restarting (exit 137)"
    assert r.json()["status"] != "ok"


def test_health_check_that_raises_is_503():
    def broken():
        raise RuntimeError("boom")

    r = _health_client(broken).get("/_opensage/health")
    assert r.status_code == 503 and r.json()["status"] == "error"
