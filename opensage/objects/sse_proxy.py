"""A pass-through HTTP front for SeaweedFS's S3 gateway that turns SSE-KMS writes into plain writes.

Why: the SageMaker Python SDK v2 uploads ``sourcedir.tar.gz`` and repacked model artifacts with
``ServerSideEncryption=aws:kms`` and usually no ``SSEKMSKeyId`` (AWS then uses the account's ``aws/s3``
key). SeaweedFS 4.48 refuses that with 500 InternalError whatever is configured: ``generateKMSDataKey``
rejects an empty key id before any KMS provider is asked, and its only serverless provider (``local``)
draws a random master key at every start, so objects written through it would be unreadable after a
restart. Nothing in weed's configuration maps an empty ``aws:kms`` to a default key.

So every request goes through this proxy unchanged, except a PUT/POST whose
``x-amz-server-side-encryption`` is ``aws:kms`` (PutObject, CreateMultipartUpload, CopyObject): after
checking the client's SigV4 signature with our own secret, the SSE-KMS headers are dropped and the request
is signed again with the same secret, date and scope. The object is then stored like any other one and
reads back after restarts. A request whose signature does not verify, that uses presigned query
authentication or signed streaming chunks, or that names another access key, is forwarded untouched, so
SeaweedFS still answers it (and refuses bad signatures) itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import logging
import socket
import threading
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

log = logging.getLogger(__name__)

SSE_HEADER = "x-amz-server-side-encryption"
SSE_KMS_HEADERS = (
    SSE_HEADER,
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled",
)
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "expect",
}
_CHUNK = 1024 * 1024
_ALGORITHM = "AWS4-HMAC-SHA256"
_STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


# -- SigV4 (header form) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SigV4Authorization:
    access_key: str
    scope: str  # date/region/service/aws4_request
    signed_headers: tuple[str, ...]
    signature: str

    @classmethod
    def parse(cls, value: str | None) -> SigV4Authorization | None:
        """The parts of an ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` header."""
        if not value or not value.startswith(_ALGORITHM + " "):
            return None
        fields: dict[str, str] = {}
        for part in value[len(_ALGORITHM) + 1:].split(","):
            name, sep, val = part.strip().partition("=")
            if sep:
                fields[name] = val
        credential = fields.get("Credential", "")
        access_key, sep, scope = credential.partition("/")
        if not sep or "SignedHeaders" not in fields or "Signature" not in fields:
            return None
        return cls(access_key, scope, tuple(fields["SignedHeaders"].split(";")), fields["Signature"])

    def header(self, signed_headers: tuple[str, ...], signature: str) -> str:
        return (f"{_ALGORITHM} Credential={self.access_key}/{self.scope}, "
                f"SignedHeaders={';'.join(signed_headers)}, Signature={signature}")


def sigv4_signature(
    secret_key: str,
    method: str,
    target: str,
    headers: Message,
    signed_headers: tuple[str, ...],
    scope: str,
) -> str:
    """The SigV4 signature of a request whose payload hash is its ``x-amz-content-sha256`` header."""
    path, _, query = target.partition("?")
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in headers.get_all(name, []))}\n"
        for name in signed_headers
    )
    canonical_request = "\n".join([
        method,
        quote(unquote(path), safe="/~"),
        _canonical_query(query),
        canonical_headers,
        ";".join(signed_headers),
        headers.get("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
    ])
    string_to_sign = "\n".join([
        _ALGORITHM,
        headers.get("x-amz-date", ""),
        scope,
        hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = ("AWS4" + secret_key).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{name}={value}" for name, value in sorted(pairs))


def strip_sse_kms(method: str, target: str, headers: Message, secrets: dict[str, str]) -> bool:
    """Drop the SSE-KMS headers of a verified SigV4 request and sign it again, in place.

    Returns False (headers untouched) unless ``headers`` ask for ``aws:kms`` with a valid header
    signature from one of ``secrets`` (access key -> secret key).
    """
    if headers.get(SSE_HEADER, "").strip().lower() != "aws:kms":
        return False
    auth = SigV4Authorization.parse(headers.get("Authorization"))
    secret = secrets.get(auth.access_key) if auth else None
    if auth is None or secret is None or headers.get("x-amz-content-sha256") == _STREAMING_SIGNED:
        return False
    expected = sigv4_signature(secret, method, target, headers, auth.signed_headers, auth.scope)
    if not hmac.compare_digest(expected, auth.signature):
        return False
    for name in SSE_KMS_HEADERS:
        del headers[name]
    signed = tuple(name for name in auth.signed_headers if name not in SSE_KMS_HEADERS)
    del headers["Authorization"]
    headers["Authorization"] = auth.header(
        signed, sigv4_signature(secret, method, target, headers, signed, auth.scope))
    return True


# -- the proxy -------------------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], proxy: SseKmsProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # an idle keep-alive connection is closed after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.proxy.track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.proxy.track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("s3 proxy: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._forward()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET  # noqa: N815

    def _forward(self) -> None:
        proxy = self.server.proxy
        if strip_sse_kms(self.command, self.path, self.headers, proxy.secrets):
            log.debug("s3 proxy: stored %s %s without SSE-KMS", self.command, self.path)
        upstream = http.client.HTTPConnection(proxy.backend_host, proxy.backend_port, timeout=proxy.timeout)
        try:
            try:
                self._send_request(upstream)
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                self._send_unavailable(exc)
                return
            self._relay_response(response)
        except (OSError, http.client.HTTPException) as exc:  # either side went away mid-transfer
            log.debug("s3 proxy: %s %s aborted: %s", self.command, self.path, exc)
            self.close_connection = True
        finally:
            upstream.close()

    def _send_request(self, upstream: http.client.HTTPConnection) -> None:
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                upstream.putheader(name, value)
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        upstream.endheaders()
        if chunked:
            self._copy_chunked_body(upstream)
        else:
            self._copy_body(upstream, int(self.headers.get("Content-Length") or 0))

    def _copy_body(self, upstream: http.client.HTTPConnection, remaining: int) -> None:
        while remaining > 0:
            data = self.rfile.read(min(_CHUNK, remaining))
            if not data:
                raise ConnectionError("client closed the connection in the middle of the body")
            upstream.send(data)
            remaining -= len(data)

    def _copy_chunked_body(self, upstream: http.client.HTTPConnection) -> None:
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            data = self.rfile.read(size) if size else b""
            self.rfile.readline()  # CRLF after the chunk (or after the trailers' end)
            upstream.send(b"%x\r\n%s\r\n" % (size, data))
            if size == 0:
                return

    def _relay_response(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        bodyless = self.command == "HEAD" or response.status in (204, 304) or response.status < 200
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        chunked = length is None and not bodyless
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if bodyless:
            return
        while data := response.read(_CHUNK):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _send_unavailable(self, exc: Exception) -> None:
        """503 (which SDKs retry) when weed cannot be reached; the client's connection is then closed."""
        self.close_connection = True
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
            f"<Message>object store backend unreachable: {type(exc).__name__}</Message></Error>"
        ).encode()
        self.send_response_only(503, "Service Unavailable")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class SseKmsProxy:
    """Listens on ``host:port`` and relays every request to ``backend_host:backend_port``."""

    def __init__(
        self,
        host: str,
        port: int,
        backend_host: str,
        backend_port: int,
        secrets: dict[str, str],
        timeout: float = 600.0,
    ) -> None:
        self.host, self.port = host, port
        self.backend_host, self.backend_port = backend_host, backend_port
        self.secrets = dict(secrets)
        self.timeout = timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Bind (raises OSError if the port is taken) and serve in a daemon thread."""
        if self._server is not None:
            return
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
            name=f"s3-proxy-{self.port}", daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut the open client connections. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            open_connections = list(self._connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)
