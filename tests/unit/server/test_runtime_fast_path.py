"""InvokeEndpoint's fast path in ``opensage up``'s HTTP server: POST /endpoints/... goes straight to the runtime
route (no proxy-headers / Starlette middleware / router), with the same checks and answers, head and body in one
write."""

from __future__ import annotations

import hashlib
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
from opensage.server import http_limits
from opensage.server.routes import build_routes
from opensage.settings import Credentials as PlatformCredentials
from tests.conftest import free_port

ROOT = PlatformCredentials("AKIDROOT", "root-secret")
PATH = "/endpoints/my-ep/invocations"


class _Runtime:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def invoke_endpoint(self, ctx, params):
        self.bodies.append(params["Body"])
        return {"Body": b"0.25\n", "ContentType": "text/csv", "InvokedProductionVariant": "AllTraffic"}


class _CountingApp:
    """The platform's Starlette app, counting the requests that went through it (the slow path)."""

    def __init__(self, app: Starlette) -> None:
        self.app, self.routes, self.calls = app, app.routes, 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.calls += 1
        await self.app(scope, receive, send)


@contextmanager
def serve() -> Iterator[tuple[int, _CountingApp, _Runtime]]:
    runtime = _Runtime()
    dispatcher = Dispatcher()
    dispatcher.register("sagemaker-runtime", runtime)
    app = _CountingApp(Starlette(routes=build_routes(dispatcher, CredentialAuthority(ROOT))))
    port = free_port()
    server = uvicorn.Server(http_limits.server_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield port, app, runtime
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[int, _CountingApp, _Runtime]]:
    with serve() as s:
        yield s


def _signed(port: int, body: bytes, secret: str = ROOT.secret_key, **extra: str) -> dict[str, str]:
    request = AWSRequest("POST", f"http://127.0.0.1:{port}{PATH}", data=body,
                         headers={"Content-Type": "text/csv", "Accept": "text/csv", **extra})
    SigV4Auth(Credentials(ROOT.access_key, secret), "sagemaker", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "content-length"}


def _request(port: int, body: bytes, headers: dict[str, str], path: str = PATH) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _responses(port: int, data: bytes, count: int = 1, timeout: float = 10.0) -> list[tuple[int, dict, bytes]]:
    """Send ``data`` on one connection; read ``count`` Content-Length responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buf, out = b"", []
        while len(out) < count:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {buf!r}"
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
            length = int(headers["content-length"])
            while len(buf) < length:
                chunk = sock.recv(65536)
                assert chunk, "connection closed mid-body"
                buf += chunk
            out.append((int(status_line.split()[1]), headers, buf[:length]))
            buf = buf[length:]
        return out


def test_invoke_endpoint_signed_request_takes_the_fast_path_and_answers(server):
    port, app, runtime = server
    before = app.calls
    body = b"1,2,3"
    [(status, headers, payload)] = _responses(port, _request(port, body, _signed(port, body)))
    assert (status, payload) == (200, b"0.25\n")
    assert headers["content-type"] == "text/csv" and headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert headers["x-amzn-requestid"] and runtime.bodies[-1] == body
    assert app.calls == before  # Starlette's stack never saw it


def test_invoke_endpoint_fast_path_bad_signature_is_403_invalid_signature(server):
    port, app, runtime = server
    seen, before = len(runtime.bodies), app.calls
    body = b"1,2,3"
    [(status, headers, payload)] = _responses(port, _request(port, body, _signed(port, body, secret="wrong")))
    assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    assert json.loads(payload)["__type"] == "InvalidSignatureException"
    assert len(runtime.bodies) == seen and app.calls == before


def test_invoke_endpoint_fast_path_body_other_than_signed_is_refused(server):
    """A signed request replayed with another body: the payload hash is the received body's, never trusted."""
    port, app, runtime = server
    seen = len(runtime.bodies)
    signed = _signed(port, b"1,2,3", **{"X-Amz-Content-SHA256": hashlib.sha256(b"1,2,3").hexdigest()})
    [(status, headers, _)] = _responses(port, _request(port, b"9,9,9", signed))
    assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    unsigned_hash = _signed(port, b"1,2,3")  # no hash header: the signature itself covers the body
    [(status, headers, _)] = _responses(port, _request(port, b"9,9,9", unsigned_hash))
    assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    assert len(runtime.bodies) == seen


def test_invoke_endpoint_pipelined_requests_answer_in_order_on_one_connection(server):
    port, _, runtime = server
    data = b"".join(_request(port, body, _signed(port, body)) for body in (b"1", b"2", b"3"))
    answers = _responses(port, data, count=3)
    assert [a[0] for a in answers] == [200, 200, 200] and runtime.bodies[-3:] == [b"1", b"2", b"3"]
    assert len({a[1]["x-amzn-requestid"] for a in answers}) == 3


def test_invoke_endpoint_expect_100_continue_takes_the_whole_app(server):
    port, app, runtime = server
    before = app.calls
    body = b"4,5"
    head, _, _ = _request(port, body, {**_signed(port, body), "Expect": "100-continue"}).partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"0.25\n") and app.calls == before + 1
    assert runtime.bodies[-1] == body


def test_control_plane_requests_still_go_through_the_app(server):
    port, app, _ = server
    before = app.calls
    [(status, headers, _)] = _responses(port, _request(port, b"{}", {"X-Amz-Target": "SageMaker.ListModels"},
                                                      path="/"))
    assert status == 403 and app.calls == before + 1


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_one_write_sends_head_and_body_together_then_passes_through():
    t = _Transport()
    w = http_limits._OneWrite(t)  # type: ignore[arg-type]
    w.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert t.writes == []
    w.write(b"body")
    w.write(b"more")
    assert t.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"] and not w.is_closing()


def test_one_write_large_body_is_not_copied_and_close_flushes_a_lone_head():
    t = _Transport()
    w = http_limits._OneWrite(t)  # type: ignore[arg-type]
    big = b"x" * http_limits.ONE_WRITE_MAX_BODY
    w.write(b"HEAD")
    w.write(big)
    assert t.writes == [b"HEAD", big]
    t2 = _Transport()
    w2 = http_limits._OneWrite(t2)  # type: ignore[arg-type]
    w2.write(b"HEAD")
    w2.close()
    assert t2.writes == [b"HEAD"] and t2.closed
