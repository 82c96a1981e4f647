"""Issue 7 item 6: a request is judged on its headers before its body is read, and bodies are capped.

Against the real server (uvicorn with ``opensage up``'s configuration, in a thread) over raw sockets: the
answer must come while the client has sent only its headers, so no body is ever read into memory.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.applications import Starlette

from opensage.api.dispatch import Dispatcher
from opensage.credentials import CredentialAuthority
from opensage.server.http_limits import server_config
from opensage.server.routes import MAX_CONTROL_BODY, MAX_RUNTIME_BODY, RestJsonEndpoint, build_routes
from opensage.settings import Credentials as PlatformCredentials
from tests.conftest import free_port

ROOT = PlatformCredentials("AKIDROOT", "root-secret")
GB = 1 << 30
RUNTIME = "/endpoints/ep/invocations"
CBOR = "/service/GraniteServiceVersion20100801/operation/DeleteAlarms"


class _Answers:
    """Every operation answers {} and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def handler(ctx, params):
            self.calls += 1
            return {}

        return handler


def make_app() -> tuple[Starlette, _Answers]:
    answers = _Answers()
    dispatcher = Dispatcher()
    for service in ("sagemaker", "sagemaker-runtime", "cloudwatch", "sts"):
        dispatcher.register(service, answers)
    return Starlette(routes=build_routes(dispatcher, CredentialAuthority(ROOT))), answers


@contextmanager
def serve(app: Any, **limits: Any) -> Iterator[int]:
    """The app behind ``opensage up``'s uvicorn configuration on a free loopback port; yields the port."""
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, **limits))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, _Answers]]:
    app, answers = make_app()
    with serve(app) as port:
        yield port, answers


def signed_headers(port: int, path: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    request = AWSRequest("POST", f"http://127.0.0.1:{port}{path}", data=body, headers=headers)
    SigV4Auth(Credentials(ROOT.access_key, ROOT.secret_key), "sagemaker", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "content-length"}


def request_head(port: int, path: str, headers: dict[str, str], content_length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {content_length}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_to_head(port: int, head: bytes, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes, bool]:
    """Send only ``head`` (no body); (status, headers, body, closed by the server) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        data = b""
        closed = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            data += chunk
    head_part, _, body = data.partition(b"\r\n\r\n")
    if not head_part:
        pytest.fail("no answer while the body was still unsent: the server waited for (or read) the body")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    out = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), out, body, closed


@pytest.mark.parametrize("path", ["/", RUNTIME, CBOR])
def test_unauthenticated_1gb_request_is_answered_before_its_body(server, path):
    port, answers = server
    head = request_head(port, path, {"X-Amz-Target": "SageMaker.ListModels", "Content-Type": "text/csv"}, GB)
    started = time.monotonic()
    status, headers, _, closed = answer_to_head(port, head)
    assert status == 403 and closed and headers["connection"] == "close"
    assert time.monotonic() - started < 3 and answers.calls == 0


def test_parallel_unauthenticated_1gb_requests_hold_no_memory(server):
    port, _ = server
    head = request_head(port, RUNTIME, {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIDNOPE/20240101/"
                                        "us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=00"}, GB)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(answer_to_head(port, head)[0])) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == [403, 403, 403]


def test_invoke_authenticated_over_6mb_is_413_validation_error_before_its_body(server):
    port, answers = server
    headers = signed_headers(port, RUNTIME, b"1,2", {"Content-Type": "text/csv"})
    status, out, body, closed = answer_to_head(port, request_head(port, RUNTIME, headers, MAX_RUNTIME_BODY + 1))
    assert (status, out["x-amzn-errortype"], closed) == (413, "ValidationError", True)
    assert "6291456 bytes for InvokeEndpoint" in json.loads(body)["message"] and answers.calls == 0


@pytest.mark.parametrize("path", ["/", CBOR])
def test_control_plane_authenticated_over_8mb_is_413_before_its_body(server, path):
    port, answers = server
    headers = signed_headers(port, path, b"{}", {"X-Amz-Target": "SageMaker.ListModels",
                                                 "Content-Type": "application/x-amz-json-1.1"}
                             if path == "/" else {"smithy-protocol": "rpc-v2-cbor"})
    status, out, body, closed = answer_to_head(port, request_head(port, path, headers, MAX_CONTROL_BODY + 1))
    assert (status, closed) == (413, True)
    assert b"RequestEntityTooLarge" in body and str(MAX_CONTROL_BODY).encode() in body
    assert answers.calls == 0


def test_signed_request_within_the_cap_is_served(server):
    port, answers = server
    body = b"1," * 1000
    headers = signed_headers(port, RUNTIME, body, {"Content-Type": "text/csv"})
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request_head(port, RUNTIME, headers, len(body)) + body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")


# -- chunked bodies (no Content-Length): the cap holds while reading -------------------------------------
def _run_chunked(app: Any, path: str, headers: dict[str, str], chunk: int = 1 << 20) -> tuple[int, int]:
    """Feed an endless chunked body to ``app``; (response status, body bytes the app pulled)."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += chunk
        if pulled > 64 * chunk:
            raise AssertionError("the app kept reading past any cap")
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
             + [(b"host", b"127.0.0.1:7420"), (b"transfer-encoding", b"chunked")],
             "scheme": "http", "server": ("127.0.0.1", 7420), "root_path": "", "http_version": "1.1"}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], pulled


@pytest.mark.parametrize(("path", "cap"), [(RUNTIME, MAX_RUNTIME_BODY), ("/", MAX_CONTROL_BODY)])
def test_chunked_body_past_the_cap_is_413_after_reading_at_most_the_cap(path, cap):
    app, answers = make_app()
    headers = signed_headers(7420, path, b"", {"X-Amz-Target": "SageMaker.ListModels"} if path == "/" else {})
    status, pulled = _run_chunked(app, path, headers)
    assert status == 413 and pulled <= cap + (1 << 20) and answers.calls == 0


def test_runtime_endpoint_chunked_body_is_capped_without_starlette():
    dispatcher = Dispatcher()
    dispatcher.register("sagemaker-runtime", _Answers())
    headers = signed_headers(7420, RUNTIME, b"", {})
    status, pulled = _run_chunked(RestJsonEndpoint(dispatcher, CredentialAuthority(ROOT)), RUNTIME, headers)
    assert status == 413 and pulled <= MAX_RUNTIME_BODY + (1 << 20)
