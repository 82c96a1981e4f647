"""Issue 7 item 7: idle, slow and surplus connections cannot exhaust the control plane's descriptors.

The real server with ``opensage up``'s configuration (short timeouts), loopback only, bounded loops.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time

import httpx

from opensage.server import http_limits
from tests.security.test_request_limits_body import RUNTIME, make_app, serve, signed_headers


def _open(port: int, n: int, first_bytes: bytes = b"") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            s.sendall(first_bytes)
        s.setblocking(False)
        out.append(s)
    return out


def _closed_by_server(s: socket.socket) -> bool:
    try:
        data = s.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return data == b""  # an idle connection gets no answer, only the close


def _wait_all_closed(socks: list[socket.socket], timeout: float) -> float:
    started = time.monotonic()
    open_ = list(socks)
    while open_ and time.monotonic() - started < timeout:
        open_ = [s for s in open_ if not _closed_by_server(s)]
        time.sleep(0.05)
    assert not open_, f"{len(open_)} of {len(socks)} connections still open after {timeout}s"
    return time.monotonic() - started


def _signed_invoke(port: int) -> httpx.Response:
    body = b"1,2"
    headers = signed_headers(port, RUNTIME, body, {"Content-Type": "text/csv"})
    return httpx.post(f"http://127.0.0.1:{port}{RUNTIME}", headers=headers, content=body, timeout=5)


def test_idle_and_slow_connections_are_closed_after_the_read_timeout_while_signed_requests_succeed():
    app, answers = make_app()
    with serve(app, read_timeout=1.5, max_connections=1000) as port:
        idle = _open(port, 300)
        slow = _open(port, 20, b"POST / HTTP/1.1\r\nHost: x\r\n")  # headers that never finish
        try:
            assert _signed_invoke(port).status_code == 200  # served while 320 connections sit there
            time.sleep(0.5)
            assert not any(_closed_by_server(s) for s in idle[:20] + slow)  # not before the timeout
            for s in slow:  # dribbling more header bytes does not extend the deadline
                s.send(b"X-A: 1\r\n")
            elapsed = _wait_all_closed(idle + slow, timeout=10)
            assert elapsed < 8
            assert _signed_invoke(port).status_code == 200 and answers.calls == 2
        finally:
            for s in idle + slow:
                s.close()


def test_keep_alive_request_arriving_in_pieces_is_served_and_a_stalled_one_closed():
    app, _ = make_app()
    with serve(app, read_timeout=1.0) as port:
        body = b"1,2"
        headers = signed_headers(port, RUNTIME, body, {"Content-Type": "text/csv"})
        head = ("\r\n".join([f"POST {RUNTIME} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}"]
                            + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            for _ in range(2):  # the second request on the connection comes in two pieces
                s.sendall(head[:20])
                time.sleep(0.3)
                s.sendall(head[20:] + body)
                assert s.recv(65536).startswith(b"HTTP/1.1 200")
            s.sendall(head[:20])  # a third that stalls: closed after the read timeout
            s.settimeout(5)
            started = time.monotonic()
            assert s.recv(65536) == b"" and time.monotonic() - started < 4


def test_connections_past_the_cap_are_closed_at_once_and_open_ones_keep_working(caplog):
    caplog.set_level(logging.WARNING, logger=http_limits.log.name)
    app, _ = make_app()
    with serve(app, read_timeout=30, max_connections=50) as port:
        socks = _open(port, 80)
        try:
            time.sleep(0.5)
            closed = [s for s in socks if _closed_by_server(s)]
            assert len(closed) >= 30  # well before the 30 s read timeout
            # A flood of connections does not flood the log: one line for the whole burst (item 12).
            over_cap = [r for r in caplog.records if "open connections" in r.getMessage()]
            assert len(over_cap) == 1
            kept = [s for s in socks if s not in closed]
            for s in kept:
                s.close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # once they are gone, new clients are served again
                try:
                    if _signed_invoke(port).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            else:
                raise AssertionError("no request served after the connections closed")
        finally:
            for s in socks:
                s.close()


def test_raise_open_files_limit_raises_the_soft_limit_to_the_hard_one():
    code = ("import resource; from opensage.server.http_limits import raise_open_files_limit as r; "
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard)); "
            "got = r(); assert got == resource.getrlimit(resource.RLIMIT_NOFILE)[0], got; "
            "assert got == (hard if hard != resource.RLIM_INFINITY else 1 << 20) or got > 256, got; print(got)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_max_connections_leaves_most_descriptors_to_the_platform():
    assert http_limits.max_connections_for(1024) == 256
    assert http_limits.max_connections_for(1 << 20) == http_limits.MAX_CONNECTIONS_CEILING
    assert http_limits.max_connections_for(100) == 64


def test_opensage_up_serves_with_the_guarded_configuration(monkeypatch, tmp_path):
    """``opensage up``'s _serve hands uvicorn server_config's limits (not uvicorn's defaults)."""
    import uvicorn

    import opensage.app
    import opensage.objects
    from opensage.cli import main as cli
    from opensage.settings import Settings

    configs: list[uvicorn.Config] = []

    class _Server:
        def __init__(self, config: uvicorn.Config) -> None:
            configs.append(config)

        def run(self) -> None:
            pass

    class _Store:
        def ensure_bucket(self, bucket: str) -> None:
            pass

    monkeypatch.setattr(uvicorn, "Server", _Server)
    monkeypatch.setattr(opensage.objects, "open_store", lambda spec: _Store())
    monkeypatch.setattr(opensage.app, "create_app", lambda settings, credentials=None, health=None, executor=None: type("P", (), {"asgi": None}))
    monkeypatch.setattr(cli, "write_client_config", lambda settings, endpoint: {"config": str(tmp_path / "c")})
    settings = Settings.build(tmp_path, s3_endpoint=f"file://{tmp_path}")
    with open(tmp_path / "lock", "a+") as lock:
        cli._serve(settings, lock, authority=None)
    (config,) = configs
    assert issubclass(config.http, http_limits.GuardedHttpToolsProtocol)
    assert config.http.read_timeout == http_limits.READ_TIMEOUT_SECONDS
    assert config.timeout_keep_alive == http_limits.KEEP_ALIVE_SECONDS and config.backlog == http_limits.BACKLOG
