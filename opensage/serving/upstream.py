"""A minimal keep-alive HTTP/1.1 client for the InvokeEndpoint hop to model servers (loopback, or Ray nodes).

Why not httpx: on this hop httpx.AsyncClient cost ~0.95 ms of CPU per request against ~0.06 ms for plain
asyncio streams (benchmarks/RESULTS.md, hosting section), and that CPU is the control plane's. Why not
asyncio streams either: a StreamReader costs one await (and a future) per header line, plus a task for
``wait_for``; an ``asyncio.Protocol`` that parses what ``data_received`` hands it costs about half as much
CPU per request. The peers are our own model servers, so the protocol subset is small: one POST at a time
per connection, Content-Length, chunked or close-delimited responses, keep-alive unless the server says
close. Each request carries its replica's token (``set_replica_token``), cached in the request head.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

CONNECT_TIMEOUT_SECONDS = 2.0
TOKEN_HEADER = "X-OpenSage-Replica-Token"  # a replica's token (model_server checks it; one definition)
# base URL -> the token its model server requires; set when a replica is routed (``Replica.routed_url``).
# Read once per request (a dict lookup); the header line itself is cached in the request head.
_TOKENS: dict[str, str] = {}


def set_replica_token(base_url: str, token: str | None) -> None:
    """Requests to ``base_url`` carry ``token`` (None: none; a loopback server started without one)."""
    # Bounded by the host:port pairs replicas ever listened on (a new replica on a port overwrites the entry);
    # never cleared wholesale, which would strip live replicas' tokens until their next route.
    if token:
        _TOKENS[base_url] = token
    else:
        _TOKENS.pop(base_url, None)


# base URL -> the Unix socket its (loopback) model server also listens on; set like the token. A Unix
# socket round trip costs ~35% less than loopback TCP (no TCP stack, no Nagle/ACK work); the token check
# is the same on both. Replicas on other nodes (Ray) and anything without one use TCP.
_SOCKETS: dict[str, str] = {}


def set_replica_socket(base_url: str, path: str | None) -> None:
    """Requests to ``base_url`` go over the Unix socket at ``path`` (None: over TCP)."""
    if path:
        _SOCKETS[base_url] = path
    else:
        _SOCKETS.pop(base_url, None)


LARGE_BODY_BYTES = 65536  # bodies this size or more are written separately, not copied onto the head


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


class _IncompleteResponse(ConnectionError):
    """The connection ended before a whole response arrived."""


class MalformedResponse(ValueError):
    """The model server's bytes are not an HTTP/1.1 response."""


class _ResponseParser:
    """Incremental HTTP/1.1 response parser: feed bytes, get (response, keep-alive) once it is complete."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.status = 0
        self.version = ""
        self.headers: dict[str, str] | None = None
        self.length = -1  # Content-Length; -1 chunked or close-delimited
        self.chunked = False
        self.pos = 0  # start of the unparsed body
        self.chunks: list[bytes] = []

    def feed(self, data: bytes) -> tuple[UpstreamResponse, bool] | None:
        if self.headers is None and not self.buf:
            whole = self._whole(data)  # the usual case: the model server's one write, in one piece
            if whole is not None:
                return whole
        self.buf += data
        if self.headers is None and not self._parse_head():
            return None
        if self.chunked:
            return self._parse_chunks()
        if self.length >= 0:
            if len(self.buf) - self.pos < self.length:
                return None
            return self._done(bytes(self.buf[self.pos:self.pos + self.length]))
        return None  # close-delimited: finished by eof()

    def eof(self) -> tuple[UpstreamResponse, bool] | None:
        """The peer closed: a close-delimited body is complete; anything else is an incomplete response."""
        if self.headers is None or self.chunked or self.length >= 0:
            return None
        self.headers["connection"] = "close"
        return self._done(bytes(self.buf[self.pos:]))

    def _whole(self, data: bytes) -> tuple[UpstreamResponse, bool] | None:
        """A complete CRLF, Content-Length response in ``data``, parsed without copying it into the buffer;
        None (nothing changed) for anything else, which the incremental path then handles."""
        end = data.find(b"\r\n\r\n")
        if end < 0 or data.find(b"\n\n", 0, end) >= 0:
            return None
        lines = data[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        if length is None or "transfer-encoding" in headers or len(data) - end - 4 < int(length):
            return None
        self.version, self.status, self.headers = parts[0], int(parts[1]), headers
        return self._done(data[end + 4:end + 4 + int(length)])

    def _parse_head(self) -> bool:
        buf = self.buf
        end, sep = buf.find(b"\r\n\r\n"), 4
        bare = buf.find(b"\n\n")
        if bare >= 0 and (end < 0 or bare < end):
            end, sep = bare, 2
        if end < 0:
            return False
        lines = bytes(buf[:end]).decode("latin-1").split("\n")
        parts = lines[0].split(" ", 2)
        self.version, self.status = parts[0], int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.headers = headers
        self.pos = end + sep
        if headers.get("transfer-encoding", "").lower() == "chunked":
            self.chunked = True
        elif "content-length" in headers:
            self.length = int(headers["content-length"])
        return True

    def _parse_chunks(self) -> tuple[UpstreamResponse, bool] | None:
        buf = self.buf
        while True:
            eol = buf.find(b"\n", self.pos)
            if eol < 0:
                return None
            size = int(bytes(buf[self.pos:eol]).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                trailer = buf.find(b"\n", eol + 1)
                if trailer < 0:
                    return None
                return self._done(b"".join(self.chunks))
            end = eol + 1 + size
            after = buf.find(b"\n", end)
            if after < 0:
                return None
            self.chunks.append(bytes(buf[eol + 1:end]))
            self.pos = after + 1

    def _done(self, content: bytes) -> tuple[UpstreamResponse, bool]:
        headers = self.headers or {}
        keep = headers.get("connection", "").lower() != "close" and self.version == "HTTP/1.1"
        return UpstreamResponse(self.status, headers, content), keep


class _Conn(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser: _ResponseParser | None = None
        self._waiter: asyncio.Future[tuple[UpstreamResponse, bool]] | None = None

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._parser is None:  # nothing asked for: the connection is out of step, never reuse it
            self.close()
            return
        try:
            done = self._parser.feed(data)
        except (ValueError, IndexError) as e:
            self._finish(None, MalformedResponse(f"malformed response from the model server: {e}"))
            self.close()
            return
        if done is not None:
            self._finish(done)

    def eof_received(self) -> bool | None:
        self.closed = True
        if self._parser is not None:
            done = self._parser.eof()
            self._finish(done, None if done else _IncompleteResponse("connection closed before a response"))
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._parser is not None:
            done = self._parser.eof() if exc is None else None
            self._finish(done, None if done else _IncompleteResponse(str(exc or "connection closed")))

    # -- requests
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    async def request(self, head: bytes, body: bytes, timeout: float) -> tuple[UpstreamResponse, bool]:
        if not self.usable():  # closed by the peer since it was opened: nothing would ever answer
            raise _IncompleteResponse("connection closed before the request was sent")
        waiter = self.loop.create_future()
        self._waiter, self._parser = waiter, _ResponseParser()
        transport = self.transport
        assert transport is not None
        if len(body) < LARGE_BODY_BYTES:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        timer = self.loop.call_later(timeout, self._expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self._waiter = self._parser = None

    def _expire(self, waiter: asyncio.Future) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    def _finish(self, done: tuple[UpstreamResponse, bool] | None, exc: BaseException | None = None) -> None:
        waiter, self._parser = self._waiter, None
        if waiter is None or waiter.done():
            return
        if done is not None:
            waiter.set_result(done)
        else:
            waiter.set_exception(exc or _IncompleteResponse("connection closed"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    def __init__(self, max_idle_per_host: int = 64) -> None:
        self.max_idle = max_idle_per_host
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        # "base URL path" -> host, port, "POST ... Host: ... token" lines, the token they hold
        self._heads: dict[str, tuple[str, int, bytes, str | None]] = {}

    async def post(self, base_url: str, path: str, body: bytes, headers: dict[str, str],
                   timeout: float) -> UpstreamResponse:
        host, port, head = self._head(base_url, path, body, headers)
        unix = _SOCKETS.get(base_url)
        for attempt in (0, 1):
            conn, reused = await self._acquire(host, port, unix)
            try:
                response, keep = await conn.request(head, body, timeout)
            except TimeoutError:
                conn.close()  # the model server is still busy with it: never reuse this connection
                raise
            except (ConnectionError, OSError) as e:
                conn.close()
                if reused and attempt == 0:
                    continue  # the server closed an idle keep-alive connection: retry on a fresh one
                raise UpstreamConnectError(str(e) or type(e).__name__) from None
            except BaseException:
                conn.close()
                raise
            if keep and conn.usable():
                self._release(host, port, conn)
            else:
                conn.close()
            return response
        raise UpstreamConnectError("connection closed")

    def _head(self, base_url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
        key = f"{base_url} {path}"
        cached = self._heads.get(key)
        token = _TOKENS.get(base_url)
        if cached is None or cached[3] != token:  # new, or a replaced replica took over the port
            host, port = _host_port(base_url)
            first = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            if token:
                first += f"{TOKEN_HEADER}: {token}\r\n"
            cached = (host, port, first.encode("latin-1"), token)
            if len(self._heads) > 4096:
                self._heads.clear()
            self._heads[key] = cached
        host, port, first, _ = cached
        rest = f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        return host, port, first + rest.encode("latin-1")

    async def _acquire(self, host: str, port: int, unix: str | None = None) -> tuple[_Conn, bool]:
        idle = self._idle.get((host, port))
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn, True
            conn.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                if unix is not None:
                    try:
                        _, conn = await loop.create_unix_connection(lambda: _Conn(loop), unix)
                        return conn, False
                    except (FileNotFoundError, ConnectionRefusedError):
                        pass  # the socket file went (a replica adopted from elsewhere): its TCP port still serves
                _, conn = await loop.create_connection(lambda: _Conn(loop), host, port)
        except (TimeoutError, OSError) as e:
            raise UpstreamConnectError(str(e) or type(e).__name__) from None
        return conn, False

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
    return host.strip("[]"), int(port)
