"""The object store's front door: authenticates every S3 request, then relays it to SeaweedFS's S3 gateway.

Why a proxy: SeaweedFS keeps exactly one identity (the platform's root key, in ``s3.json``), while clients sign
with the root key *or* a job's temporary credentials (``opensage.credentials``); and weed 4.48 neither checks
a body against its signed ``x-amz-content-sha256`` nor accepts a presigned PUT whose Content-Type is not
signed. So here, for every request:

1. its SigV4 (``Authorization`` header, or presigned ``X-Amz-*`` query) is verified against
   ``authority.principal(access key, session token)`` (``s3auth.verify``); a bad one is answered here with
   S3's XML error and never reaches weed;
2. ``aws:kms`` writes lose their SSE-KMS headers: the SageMaker SDK uploads with ``ServerSideEncryption=
   aws:kms`` and no key id, which weed refuses (500); they are stored as plain objects instead;
3. the request is signed again with the root key (header form, fresh date) and relayed;
4. the body is checked while it streams: a hex ``x-amz-content-sha256`` must match (the last piece is held
   back until it does, and the backend connection is aborted otherwise, so weed never commits it); signed
   ``aws-chunked`` uploads have every chunk signature verified and reach weed decoded. ``UNSIGNED-PAYLOAD``
   and ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (checked by weed against its CRC trailer) pass as S3 allows.

It is event-driven (asyncio, one thread for all connections): an idle connection costs a socket, not a thread.
Headers must arrive within ``header_timeout``, a keep-alive connection idle for ``idle_timeout`` is closed,
and at most ``max_connections`` are open at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from xml.sax.saxutils import escape

from opensage.credentials import CredentialAuthority, Principal
from opensage.objects import s3auth
from opensage.objects.s3auth import Headers, PayloadRule, S3AuthError
from opensage.settings import Credentials

log = logging.getLogger(__name__)

SSE_HEADER = "x-amz-server-side-encryption"
SSE_KMS_HEADERS = (
    SSE_HEADER,
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
)
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "expect", "content-length",
})
_CHUNK = 1024 * 1024
_MAX_HEAD = 64 * 1024
_STREAM_LIMIT = 256 * 1024
SPLICE_MIN = 2 * _CHUNK  # a smaller body goes through Python (a splice's setup costs a few syscalls)
_PIPE_SIZE = 1024 * 1024  # /proc/sys/fs/pipe-max-size's default: what an unprivileged process may ask


class _ClientGone(Exception):
    """The client closed or stalled mid-request: drop the connection without an answer."""


class _BodyRefused(Exception):
    def __init__(self, error: S3AuthError) -> None:
        self.error = error


def _error_body(code: str, message: str, resource: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{escape(message)}'
            f"</Message><Resource>{escape(resource)}</Resource><RequestId>{uuid.uuid4().hex[:16].upper()}"
            "</RequestId></Error>").encode()


def _parse_head(head: bytes) -> tuple[str, str, str, Headers]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"bad request line {lines[0][:100]!r}")
    items = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ValueError("bad header line")
        items.append((name, value.strip()))
    return parts[0], parts[1], parts[2], Headers(items)


class SseKmsProxy:
    """Listens on ``host:port``; relays authenticated requests to the backend (a unix socket or host:port)."""

    def __init__(
        self,
        host: str,
        port: int,
        backend_host: str,
        backend_port: int,
        secrets: dict[str, str] | None = None,
        timeout: float = 600.0,
        *,
        authority: CredentialAuthority | None = None,
        backend_socket: str | Callable[[], str] | None = None,
        root: tuple[str, str] | None = None,
        header_timeout: float = 20.0,
        idle_timeout: float = 60.0,
        max_connections: int = 4096,
        backend_wait: float = 0.0,
        backend_restarting: Callable[[], bool] | None = None,
    ) -> None:
        """``authority`` decides who may sign; without one, the first of ``secrets`` (access key -> secret) is
        the only key. ``root`` is the key weed knows (default: the authority's root key)."""
        self.host, self.port = host, port
        self.backend_host, self.backend_port = backend_host, backend_port
        self.backend_socket = backend_socket
        self.secrets = dict(secrets or {})
        if authority is None:
            if not self.secrets:
                raise ValueError("SseKmsProxy needs an authority or secrets")
            key, secret = next(iter(self.secrets.items()))
            authority = CredentialAuthority(Credentials(key, secret))
        self.authority = authority
        self.root = root or (authority.root.access_key, authority.root.secret_key)
        self.timeout = timeout  # one read or write of the body / backend answer may stall this long
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.backend_wait = backend_wait  # how long a request waits for an unreachable backend to come back
        # True while the backend's supervisor is bringing it back: a restarted weed listens before its filer and
        # volumes are ready and answers 500 meanwhile, so bodyless reads are retried (within backend_wait).
        self.backend_restarting = backend_restarting or (lambda: False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._started = threading.Event()

    @property
    def connections(self) -> int:
        return len(self._writers)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind (raises OSError if the port is taken) and serve from one daemon thread."""
        if self._thread is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto IPPROTO_TCP (not 0): accepted sockets inherit it, and only then does asyncio set TCP_NODELAY on
        # them. Without it a response written in two parts (head, body) on a kept-alive connection waited for
        # the client's delayed ACK: ~40 ms per S3 request after a connection's first.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(sock,), name=f"s3-proxy-{self.port}", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _run(self, sock: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._connection, sock=sock, limit=_STREAM_LIMIT,
                                                      backlog=1024)
            self._started.set()

        loop.run_until_complete(serve())
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        """Stop listening and cut the open client connections. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop)
        thread.join(timeout=5)

    # -- one client connection ----------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= self.max_connections:
            writer.transport.abort()
            return
        self._writers.add(writer)
        try:
            first = True
            while True:
                try:
                    head = await self._read_head(reader, first)
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                first = False
                if not await self._request(head, reader, writer):
                    return
        except (ConnectionError, _ClientGone, TimeoutError, asyncio.CancelledError):
            return  # (cancelled: the proxy is stopping; finishing quietly keeps asyncio from logging it)
        except Exception:  # noqa: BLE001 - one broken request must not take the proxy down
            log.exception("s3 proxy: request failed")
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _read_head(self, reader: asyncio.StreamReader, first: bool) -> bytes:
        # A new connection must send its headers within header_timeout; a kept-alive one may idle for
        # idle_timeout before the next request starts, then has header_timeout for the rest.
        start = await asyncio.wait_for(reader.readexactly(1), self.header_timeout if first else self.idle_timeout)
        rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.header_timeout)
        return start + rest

    async def _request(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Handle one request; True if the connection may carry another."""
        try:
            method, target, version, headers = _parse_head(head)
        except ValueError:
            await self._answer_error(writer, 400, "BadRequest", "Malformed HTTP request", "")
            return False
        resource = target.partition("?")[0]
        try:
            rule = await self._verify(method, target, headers)
        except S3AuthError as exc:
            log.debug("s3 proxy: refused %s %s: %s", method, resource, exc.code)
            await self._answer_error(writer, exc.status, exc.code, exc.message, resource)
            return False  # the body (if any) was not read: the connection cannot be reused
        if (headers.get("expect") or "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        keep_alive = version == "HTTP/1.1" and (headers.get("connection") or "").lower() != "close"
        try:
            return await self._relay(method, target, headers, rule, reader, writer) and keep_alive
        except S3AuthError as exc:
            await self._answer_error(writer, exc.status, exc.code, exc.message, resource)
            return False

    async def _verify(self, method: str, target: str, headers: Headers) -> PayloadRule:
        def lookup(access_key: str, token: str | None) -> Principal | None:
            return self.authority.principal(access_key, token)

        if _temporary_key(headers, target):
            # is_active may read the database: keep it off the event loop.
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, s3auth.verify, method, target, headers, lookup)
        return s3auth.verify(method, target, headers, lookup)

    async def _answer_error(self, writer: asyncio.StreamWriter, status: int, code: str, message: str,
                            resource: str, close: bool = True) -> None:
        body = _error_body(code, message, resource)
        reason = {400: "Bad Request", 403: "Forbidden", 503: "Service Unavailable"}.get(status, "Error")
        writer.write((f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                      f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
                      ).encode() + body)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.drain(), 10)

    # -- relaying -----------------------------------------------------------------------------------
    async def _relay(self, method: str, target: str, headers: Headers, rule: PayloadRule,
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        body = self._client_body(headers, reader, rule)
        payload = rule.content_sha256
        if payload in (s3auth.STREAMING_SIGNED, s3auth.STREAMING_SIGNED_TRAILER):
            decoded = headers.get("x-amz-decoded-content-length")
            headers.remove("x-amz-decoded-content-length", "x-amz-trailer")
            encodings = [e.strip() for e in (headers.get("content-encoding") or "").split(",")
                         if e.strip() and e.strip() != "aws-chunked"]
            headers.remove("content-encoding")
            if encodings:
                headers.set("Content-Encoding", ",".join(encodings))
            length = int(decoded) if decoded and decoded.isdigit() else None
            body = _decode_signed_chunks(body, s3auth.ChunkVerifier(rule), payload == s3auth.STREAMING_SIGNED_TRAILER)
            payload = s3auth.UNSIGNED
        else:
            length = _content_length(headers)
            if s3auth._HEX64.fullmatch(payload):
                body = _check_sha256(body, payload)
            elif rule.presigned:
                payload = s3auth.UNSIGNED
        if method in ("PUT", "POST") and (headers.get(SSE_HEADER) or "").strip().lower() == "aws:kms":
            headers.remove(*SSE_KMS_HEADERS)
        path, pairs, backend_target = s3auth.backend_target(target)
        s3auth.sign_for_backend(method, path, pairs, headers, self.root[0], self.root[1], payload)
        deadline = time.monotonic() + self.backend_wait
        while True:
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(self._open_backend(), 10)
            except (OSError, TimeoutError) as exc:
                # weed restarting (its supervisor brings it back within seconds): wait rather than fail
                if time.monotonic() >= deadline:
                    await self._answer_error(writer, 503, "ServiceUnavailable",
                                             f"object store backend unreachable: {type(exc).__name__}", path)
                    return False
                await asyncio.sleep(0.25)
                continue
            retry = method in ("GET", "HEAD") and not length and time.monotonic() < deadline
            try:
                answered = await self._exchange(method, backend_target, headers, body, length, upstream_reader,
                                                upstream_writer, writer, path, retry_5xx=retry)
            finally:
                upstream_writer.transport.abort()
            if answered is not None:
                return answered
            await asyncio.sleep(0.25)  # a restarting weed answered 5xx to a read: ask again

    async def _open_backend(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.backend_socket is not None:
            path = self.backend_socket() if callable(self.backend_socket) else self.backend_socket
            return await asyncio.open_unix_connection(path, limit=_STREAM_LIMIT)
        return await asyncio.open_connection(self.backend_host, self.backend_port, limit=_STREAM_LIMIT)

    async def _exchange(self, method: str, target: str, headers: Headers, body: AsyncIterator[bytes],
                        length: int | None, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                        writer: asyncio.StreamWriter, path: str, retry_5xx: bool = False) -> bool | None:
        """Send the request to weed and relay its answer; None (nothing sent to the client) when
        ``retry_5xx`` and weed answered 500/503 while its supervisor restarts it."""
        lines = [f"{method} {target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in headers.items if k.lower() not in _HOP_BY_HOP]
        has_body = length is not None and length > 0 or length is None and _has_body(headers)
        if length is not None:
            lines.append(f"Content-Length: {length}")
        elif has_body:
            lines.append("Transfer-Encoding: chunked")
        pieces = body.__aiter__()
        try:
            # Nothing reaches weed before the first piece checked out: weed stores an empty object when a
            # request is cut before any of its body arrived (but nothing when cut mid-body).
            first = [await pieces.__anext__()]
        except StopAsyncIteration:
            first = []
        except _BodyRefused as refused:
            exc = refused.error
            await self._answer_error(writer, exc.status, exc.code, exc.message, path)
            return False
        up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            async for piece in _chain(first, pieces):
                if piece:
                    up_writer.write(piece if length is not None else b"%x\r\n%s\r\n" % (len(piece), piece))
                    await asyncio.wait_for(up_writer.drain(), self.timeout)
            if length is None and has_body:
                up_writer.write(b"0\r\n\r\n")
            await asyncio.wait_for(up_writer.drain(), self.timeout)
        except _BodyRefused as refused:
            up_writer.transport.abort()  # weed sees a cut body and stores nothing
            exc = refused.error
            await self._answer_error(writer, exc.status, exc.code, exc.message, path)
            return False
        except (ConnectionError, TimeoutError, OSError) as exc:
            await self._answer_error(writer, 503, "ServiceUnavailable",
                                     f"object store backend unreachable: {type(exc).__name__}", path)
            return False
        try:
            head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), self.timeout)
            while head.startswith(b"HTTP/1.1 1"):  # interim answers (100 Continue) are ours to give
                head = await asyncio.wait_for(up_reader.readuntil(b"\r\n\r\n"), self.timeout)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError) as exc:
            await self._answer_error(writer, 503, "ServiceUnavailable",
                                     f"object store backend unreachable: {type(exc).__name__}", path)
            return False
        if retry_5xx and head[9:12] in (b"500", b"503") and self.backend_restarting():
            return None
        return await self._relay_response(method, head, up_reader, up_writer, writer)

    async def _relay_response(self, method: str, head: bytes, up_reader: asyncio.StreamReader,
                              up_writer: asyncio.StreamWriter, writer: asyncio.StreamWriter) -> bool:
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = Headers([(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:] if line)])
        bodyless = method == "HEAD" or status in (204, 304)
        length = _content_length(headers)
        chunked = "chunked" in (headers.get("transfer-encoding") or "").lower()
        out = [lines[0]] + [f"{k}: {v}" for k, v in headers.items
                            if k.lower() not in _HOP_BY_HOP or k.lower() == "content-length"]
        if not bodyless and length is None:
            out.append("Transfer-Encoding: chunked")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if bodyless:
            await self._drain(writer)
            return True
        if chunked:
            async for piece in _chunked_pieces(up_reader, self.timeout):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await self._drain(writer)
            writer.write(b"0\r\n\r\n")
        elif length is not None:
            if not await self._relay_length(up_reader, up_writer, writer, length):
                return False  # weed died mid-answer: the client sees a short body and a closed connection
        else:
            while data := await asyncio.wait_for(up_reader.read(_CHUNK), self.timeout):
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await self._drain(writer)
            writer.write(b"0\r\n\r\n")
        await self._drain(writer)
        return True

    async def _relay_length(self, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
                            writer: asyncio.StreamWriter, length: int) -> bool:
        """Relay a body of ``length`` bytes from weed to the client; False if weed's answer ended short.

        A large body moves socket to socket in the kernel (``_splice``), after what weed's reader already holds:
        copied through asyncio's buffers, 200 MB of a job's channel cost the control plane's process 0.30-0.36 s
        of CPU, spliced 0.19-0.27 s (benchmarks/bench_channel_download.py; on 2 cores the job competes with it).
        The backend connection serves this one request only, so its transport never reads again once the splice
        takes over."""
        remaining = length
        buffered = getattr(up_reader, "_buffer", None)  # asyncio has no public "bytes held" of a StreamReader
        if length >= SPLICE_MIN and buffered is not None and _plain_sockets(up_writer, writer):
            transport = up_writer.transport
            transport.pause_reading()  # the rest of the body stays in the socket
            if buffered:
                data = await up_reader.read(min(len(buffered), remaining))  # there already: no wait
                transport.pause_reading()  # read() resumes a transport its reader had paused itself
                writer.write(data)
                remaining -= len(data)
            await self._flush(writer)  # our bytes reach the client's socket after what asyncio holds
            src, dst = _socket_of(up_writer), _socket_of(writer)
            if dst < 0:  # closed meanwhile (its transport saw the client go)
                raise _ClientGone()
            moved = await _splice(src, dst, remaining, self.timeout) if src >= 0 else 0
            return moved == remaining
        while remaining > 0:
            data = await asyncio.wait_for(up_reader.read(min(_CHUNK, remaining)), self.timeout)
            if not data:
                return False
            writer.write(data)
            remaining -= len(data)
            await self._drain(writer)
        return True

    async def _flush(self, writer: asyncio.StreamWriter) -> None:
        """Wait until the transport has handed every byte written to the socket."""
        transport = writer.transport
        transport.set_write_buffer_limits(high=0)  # drain() now waits for an empty buffer
        try:
            await self._drain(writer)
        finally:
            transport.set_write_buffer_limits()

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(writer.drain(), self.timeout)
        except (ConnectionError, TimeoutError) as exc:
            raise _ClientGone() from exc

    async def _client_body(self, headers: Headers, reader: asyncio.StreamReader,
                           rule: PayloadRule) -> AsyncIterator[bytes]:
        """The request body as sent (HTTP framing removed)."""
        try:
            if "chunked" in (headers.get("transfer-encoding") or "").lower():
                async for piece in _chunked_pieces(reader, self.timeout):
                    yield piece
                return
            remaining = _content_length(headers) or 0
            while remaining > 0:
                data = await asyncio.wait_for(reader.read(min(_CHUNK, remaining)), self.timeout)
                if not data:
                    raise _ClientGone()
                remaining -= len(data)
                yield data
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError,
                ValueError) as exc:
            raise _ClientGone() from exc


def _socket_of(writer: asyncio.StreamWriter) -> int:
    """The transport's socket descriptor; -1 once the transport has closed it."""
    return writer.transport.get_extra_info("socket").fileno()


def _plain_sockets(*writers: asyncio.StreamWriter) -> bool:
    return all(w.transport.get_extra_info("socket") is not None and w.transport.get_extra_info("sslcontext") is None
               for w in writers)


async def _splice(src: int, dst: int, count: int, timeout: float) -> int:
    """Move ``count`` bytes from socket ``src`` to socket ``dst`` through a pipe, in the kernel; the bytes
    moved (fewer if ``src`` ends first). On the event loop's thread, waiting for readiness as the transports
    do. On duplicates of the descriptors: the loop refuses readers on a transport's own, and a transport
    closed meanwhile (the client reset, the proxy stopping) cannot close one under us. ``_ClientGone`` when
    the client goes away or stalls for ``timeout``."""
    loop = asyncio.get_running_loop()
    held_fds: list[int] = []  # closed on the way out, however far the setup got
    try:
        for fd in (src, dst):
            held_fds.append(os.dup(fd))
        held_fds.extend(os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC))
        src, dst, pipe_r, pipe_w = held_fds
        with contextlib.suppress(OSError):
            fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # fewer, larger moves (default 64 KB)
        flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
        moved = held = 0
        while moved < count:
            if held == 0:
                try:
                    held = os.splice(src, pipe_w, min(_PIPE_SIZE, count - moved), flags=flags)
                except BlockingIOError:
                    await _ready(loop, src, writable=False, timeout=timeout)
                    continue
                except OSError:
                    return moved  # weed's connection broke: a short body
                if held == 0:
                    return moved
            try:
                sent = os.splice(pipe_r, dst, held, flags=flags)
            except BlockingIOError:
                await _ready(loop, dst, writable=True, timeout=timeout)
                continue
            except OSError as exc:
                raise _ClientGone() from exc
            held -= sent
            moved += sent
        return moved
    finally:
        for fd in held_fds:
            os.close(fd)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, writable: bool, timeout: float) -> None:
    waiter = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writable else (loop.add_reader, loop.remove_reader)
    add(fd, lambda: waiter.done() or waiter.set_result(None))
    try:
        await asyncio.wait_for(waiter, timeout)
    except TimeoutError as exc:
        raise _ClientGone() from exc  # a stalled peer: the connection is dropped as for a drain timeout
    finally:
        remove(fd)


async def _chain(first: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for piece in first:
        yield piece
    if first:
        async for piece in rest:
            yield piece


def _temporary_key(headers: Headers, target: str) -> bool:
    auth = headers.get("authorization") or ""
    return "Credential=ASIA" in auth or "X-Amz-Credential=ASIA" in target


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None or "chunked" in (headers.get("transfer-encoding") or "").lower():
        return None
    if not value.isdigit():
        raise S3AuthError(400, "BadRequest", "Invalid Content-Length")
    return int(value)


def _has_body(headers: Headers) -> bool:
    return "chunked" in (headers.get("transfer-encoding") or "").lower()


async def _chunked_pieces(reader: asyncio.StreamReader, timeout: float) -> AsyncIterator[bytes]:
    """The data of an HTTP/1.1 chunked body (trailers skipped)."""
    while True:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await asyncio.wait_for(reader.readuntil(b"\r\n"), timeout)) != b"\r\n":
                pass
            return
        remaining = size
        while remaining > 0:
            data = await asyncio.wait_for(reader.read(min(_CHUNK, remaining)), timeout)
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(data)
            yield data
        await asyncio.wait_for(reader.readexactly(2), timeout)


async def _check_sha256(body: AsyncIterator[bytes], expected: str) -> AsyncIterator[bytes]:
    """Pass the body on, holding its last piece back until the whole body hashes to ``expected``."""
    digest = hashlib.sha256()
    held: bytes | None = None
    loop = asyncio.get_running_loop()
    async for piece in body:
        if len(piece) >= 256 * 1024:  # hashlib lets go of the GIL: other connections go on meanwhile
            await loop.run_in_executor(None, digest.update, piece)
        else:
            digest.update(piece)
        if held is not None:
            yield held
        held = piece
    if digest.hexdigest() != expected:
        raise _BodyRefused(S3AuthError(400, "XAmzContentSHA256Mismatch",
                                       "The provided 'x-amz-content-sha256' header does not match what was "
                                       "computed."))
    if held is not None:
        yield held


class _Buffered:
    """readline / readexactly over an async iterator of byte pieces."""

    def __init__(self, source: AsyncIterator[bytes]) -> None:
        self._source = source
        self._buf = bytearray()

    async def _fill(self) -> bool:
        try:
            piece = await self._source.__anext__()
        except StopAsyncIteration:
            return False
        self._buf += piece
        return True

    async def readline(self, limit: int = 8192) -> bytes:
        while (end := self._buf.find(b"\r\n")) < 0:
            if len(self._buf) > limit or not await self._fill():
                raise _BodyRefused(S3AuthError(400, "IncompleteBody", "Malformed aws-chunked body"))
        line = bytes(self._buf[:end])
        del self._buf[:end + 2]
        return line

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not await self._fill():
                raise _BodyRefused(S3AuthError(400, "IncompleteBody", "The request body ended early"))
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data


async def _decode_signed_chunks(body: AsyncIterator[bytes], verifier: s3auth.ChunkVerifier,
                                trailer: bool) -> AsyncIterator[bytes]:
    """The payload of an ``aws-chunked`` body, each chunk yielded only after its signature verified."""
    source = _Buffered(body)
    while True:
        line = (await source.readline()).decode("latin-1")
        size_text, _, ext = line.partition(";")
        name, _, provided = ext.partition("=")
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            size = -1
        if size < 0 or size > 64 * 1024 * 1024 or name.strip() != "chunk-signature":
            raise _BodyRefused(S3AuthError(400, "IncompleteBody", "Malformed aws-chunked body"))
        data = await source.readexactly(size) if size else b""
        try:
            verifier.chunk(data, provided.strip())
        except S3AuthError as exc:
            raise _BodyRefused(exc) from None
        if size:
            await source.readexactly(2)
            yield data
            continue
        if not trailer:
            return
        lines = []
        while line_bytes := await source.readline():
            lines.append(line_bytes)
        signature_lines = [ln for ln in lines if ln.startswith(b"x-amz-trailer-signature:")]
        checks = [ln for ln in lines if not ln.startswith(b"x-amz-trailer-signature:")]
        if not signature_lines:
            raise _BodyRefused(S3AuthError(400, "IncompleteBody", "The trailer signature is missing"))
        try:
            verifier.trailer(b"".join(ln + b"\n" for ln in checks),
                             signature_lines[0].partition(b":")[2].strip().decode())
        except S3AuthError as exc:
            raise _BodyRefused(exc) from None
        return

