"""A minimal keep-alive HTTP/1.1 client for the InvokeEndpoint hop to local model servers.

Why not httpx: on this hop httpx.AsyncClient cost ~0.95 ms of CPU per request against ~0.06 ms for plain
asyncio streams (benchmarks/RESULTS.md, hosting section), and that CPU is the control plane's. The peers are
our own model servers on loopback, so the protocol subset is small: one POST at a time per connection,
Content-Length or chunked responses, keep-alive unless the server says close.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


class UpstreamConnectError(ConnectionError):
    """The model server could not be reached (refused, reset before a response): try another instance."""


@dataclass
class UpstreamResponse:
    status_code: int
    headers: dict[str, str]  # lower-case names
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


class UpstreamPool:
    def __init__(self, max_idle_per_host: int = 64) -> None:
        self.max_idle = max_idle_per_host
        self._idle: dict[tuple[str, int], list[_Conn]] = {}

    async def post(self, base_url: str, path: str, body: bytes, headers: dict[str, str],
                   timeout: float) -> UpstreamResponse:
        host, port = _host_port(base_url)
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode("latin-1")
        for attempt in (0, 1):
            conn, reused = await self._acquire(host, port)
            try:
                conn.writer.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    conn.writer.write(body)
                response, keep = await asyncio.wait_for(_read_response(conn.reader), timeout)
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: retry on a fresh one
                raise UpstreamConnectError(str(e) or type(e).__name__) from None
            except BaseException:
                conn.close()
                raise
            if keep:
                self._release(host, port, conn)
            else:
                conn.close()
            return response
        raise UpstreamConnectError("connection closed")

    async def _acquire(self, host: str, port: int) -> tuple[_Conn, bool]:
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                return conn, True
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
        except (TimeoutError, OSError) as e:
            raise UpstreamConnectError(str(e) or type(e).__name__) from None
        return _Conn(reader, writer), False

    def _release(self, host: str, port: int, conn: _Conn) -> None:
        idle = self._idle.setdefault((host, port), [])
        if len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


def _host_port(base_url: str) -> tuple[str, int]:
    hostport = base_url.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port)


async def _read_response(reader: asyncio.StreamReader) -> tuple[UpstreamResponse, bool]:
    status_line = await reader.readline()
    if not status_line:
        raise asyncio.IncompleteReadError(b"", None)
    parts = status_line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                break
            chunks.append(await reader.readexactly(size))
            await reader.readline()
        content = b"".join(chunks)
    elif "content-length" in headers:
        content = await reader.readexactly(int(headers["content-length"]))
    else:
        content = await reader.read()  # close-delimited
        headers["connection"] = "close"
    keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    return UpstreamResponse(status, headers, content), keep
