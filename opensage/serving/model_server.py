"""The model server: one OS process per endpoint instance (or batch-transform worker).

``python -m opensage.serving.model_server --model-dir DIR --port PORT [--host 127.0.0.1]
[--kind builtin-xgboost|sklearn|pytorch|xgboost-script|pipeline] [--workers N]`` serves

* ``GET /ping`` - 200 once the model is loaded (by every worker), 503 before; an invocation that arrives
  while this worker is still loading waits for it;
* ``POST /invocations`` - Content-Type, Accept and ``X-Amzn-SageMaker-Custom-Attributes`` passed to the
  handler, the response's Content-Type and custom attributes passed back;
* ``GET /execution-parameters`` - the batch-transform parameters (§7 of the contracts doc).

Kind ``pipeline`` fronts one child server per container of an inference pipeline (``serving.pipeline``);
with ``OPENSAGE_MULTI_MODEL_URL`` set the server is a multi-model server (``serving.multimodel``) loading
``X-Amzn-SageMaker-Target-Model`` per request. Any other server answers a request carrying a TargetModel
or TargetContainerHostname with 400 and ``X-OpenSage-Error-Type: ValidationError``.

Every flag can come from the environment instead: ``OPENSAGE_MODEL_KIND``, ``SAGEMAKER_BIND_TO_PORT``
(8080), ``OPENSAGE_MODEL_SERVER_HOST`` (127.0.0.1), the model dir from ``$SAGEMAKER_BASE_DIR/model``
(``/opt/ml/model``), ``SAGEMAKER_MODEL_SERVER_WORKERS`` (1). Script mode reads ``SAGEMAKER_PROGRAM`` and
``SAGEMAKER_SUBMIT_DIRECTORY`` (see ``resolve_code_dir``); a ``requirements.txt`` beside the code is
installed into a cached venv (``opensage.frameworks.venvs``) and the server re-executes itself under
that venv's python, so callers always start it with the platform python.

The HTTP layer is a small asyncio protocol (HTTP/1.1, keep-alive, Content-Length or chunked bodies,
``Expect: 100-continue``) rather than a framework: the per-request path is parse headers -> call the
handler in the loop's worker thread -> write one buffer, with nothing imported or read per request.
Predictions run on a single worker thread per process so ``/ping`` answers while a prediction runs;
``SAGEMAKER_MODEL_SERVER_WORKERS`` > 1 forks that many processes sharing the listening socket, each
loading its own copy of the model. SIGTERM: stop accepting, finish in-flight requests, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import json
import mmap
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opensage.serving.handlers import (
    BuiltinHandler,
    Handler,
    ModelLoadError,
    Request,
    Response,
    ScriptHandler,
    default_accept,
)
from opensage.serving.handlers import answer as _safe_invoke  # one function for HTTP and in-process callers
from opensage.serving.plan import MULTI_MODEL_ENV, PIPELINE_KIND
from opensage.serving.upstream import TOKEN_HEADER  # the one definition

KINDS = ("builtin-xgboost", "sklearn", "pytorch", "xgboost-script", PIPELINE_KIND)
SCRIPT_FRAMEWORKS = {"sklearn": "sklearn", "pytorch": "pytorch", "xgboost-script": "xgboost"}
REEXEC_ENV = "OPENSAGE_MODEL_SERVER_VENV"
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_BODY_MB = 100
DRAIN_SECONDS = 30.0
INLINE_MAX_BYTES = 64 * 1024  # built-in algorithms answer requests up to this size on the event loop
STATUS_TEXT = {200: "OK", 100: "Continue", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
               406: "Not Acceptable", 413: "Payload Too Large", 415: "Unsupported Media Type",
               424: "Failed Dependency", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
               503: "Service Unavailable"}


def log(message: str) -> None:
    print(f"[model-server {os.getpid()}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ configuration
@dataclass
class ServerConfig:
    model_dir: Path
    host: str
    port: int
    kind: str
    workers: int
    code_dir: Path | None
    program: str | None
    max_body_bytes: int
    listen_fd: int | None = None
    token: bytes | None = None  # every request must carry it (``TOKEN_HEADER``); None: loopback-only servers
    listen_unix_fd: int | None = None  # an inherited, listening Unix socket served beside the TCP one
    unix_sock: socket.socket | None = None  # that socket, once taken over (``bind_unix``)


# The platform's proof that a request comes from its own router / health check: the replica manager gives
# the server a random token in ``TOKEN_ENV`` (not argv: /proc/<pid>/cmdline is world-readable); the server
# takes it out of its environment before user code loads, and refuses any request (``/ping`` too) without it.
TOKEN_ENV = "OPENSAGE_REPLICA_TOKEN"
_TOKEN_KEY = TOKEN_HEADER.lower()


def parse_args(argv: list[str] | None) -> ServerConfig:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m opensage.serving.model_server")
    parser.add_argument("--model-dir", default=env.get("OPENSAGE_MODEL_DIR") or
                        os.path.join(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"), "model"))
    parser.add_argument("--port", type=int, default=int(env.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    parser.add_argument("--host", default=env.get("OPENSAGE_MODEL_SERVER_HOST", "127.0.0.1"))
    parser.add_argument("--kind", default=env.get("OPENSAGE_MODEL_KIND", "builtin-xgboost"),
                        help=f"one of {', '.join(KINDS)} (or builtin-<algorithm>)")
    parser.add_argument("--workers", type=int, default=int(env.get("SAGEMAKER_MODEL_SERVER_WORKERS") or 1))
    parser.add_argument("--code-dir", default=None, help="resolved script-mode code directory (internal)")
    parser.add_argument("--listen-fd", type=int, default=None,
                        help="an inherited socket already bound to --port and listening (internal)")
    parser.add_argument("--listen-unix-fd", type=int, default=None,
                        help="an inherited Unix socket, bound and listening, also served (internal)")
    args = parser.parse_args(argv)
    if args.kind not in SCRIPT_FRAMEWORKS and args.kind != PIPELINE_KIND and not args.kind.startswith("builtin-"):
        parser.error(f"--kind {args.kind!r} is not one of {', '.join(KINDS)} (or builtin-<algorithm>)")
    max_mb = env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB")
    max_bytes = int(float(max_mb) * 1024 * 1024) if max_mb and float(max_mb) > 0 else \
        DEFAULT_MAX_BODY_MB * 1024 * 1024
    return ServerConfig(model_dir=Path(args.model_dir), host=args.host, port=args.port, kind=args.kind,
                        workers=max(1, args.workers), code_dir=Path(args.code_dir) if args.code_dir else None,
                        program=env.get("SAGEMAKER_PROGRAM") or None, max_body_bytes=max_bytes,
                        listen_fd=args.listen_fd, token=_token_from_env(),
                        listen_unix_fd=args.listen_unix_fd)


def _token_from_env() -> bytes | None:
    token = os.environ.get(TOKEN_ENV) or None
    return token.encode("latin-1") if token else None


def authorized(headers: dict[str, str], token: bytes | None) -> bool:
    """The request carries the server's token (constant-time compare), or the server has none."""
    if token is None:
        return True
    return hmac.compare_digest(headers.get(_TOKEN_KEY, "").encode("latin-1"), token)


def resolve_code_dir(model_dir: Path, submit_directory: str | None) -> Path | None:
    """Where the user's inference code is.

    ``SAGEMAKER_SUBMIT_DIRECTORY``: an ``s3://.../sourcedir.tar.gz`` (downloaded with the environment's S3
    endpoint, ``AWS_ENDPOINT_URL_S3``), a local directory or tarball, or ``/opt/ml/model/...`` (the SDK's
    repacked models; mapped onto ``model_dir``). Without it, ``<model_dir>/code`` if present.
    """
    if submit_directory:
        from opensage.frameworks.training import ClientError, fetch_source

        uri = submit_directory.removeprefix("file://")
        if uri == "/opt/ml/model" or uri.startswith("/opt/ml/model/"):
            uri = str(model_dir / uri.removeprefix("/opt/ml/model").lstrip("/"))
        if uri.startswith("https://"):  # an S3 object URL, as SageMaker accepts them
            from opensage.objects.base import normalize_s3_url

            try:
                uri = normalize_s3_url(uri)
            except ValueError as exc:
                raise ModelLoadError(f"SAGEMAKER_SUBMIT_DIRECTORY: {exc}") from exc
        if not uri.startswith("s3://"):
            # A local path is a path in the container: only the model's own directory is the container
            # here. Elsewhere on the host it would be read by the model server (root in a plain install).
            real, root = os.path.realpath(uri), os.path.realpath(model_dir)
            if real != root and not real.startswith(root.rstrip("/") + "/"):
                raise ModelLoadError(
                    f"SAGEMAKER_SUBMIT_DIRECTORY '{submit_directory}' is a local path outside /opt/ml/model: "
                    "give the s3:// URI of a sourcedir.tar.gz or a path under /opt/ml/model.")
            if Path(real).is_dir():
                return Path(real)
        target = Path(tempfile.mkdtemp(prefix="opensage-inference-code-"))
        try:
            fetch_source(uri, target, root=Path(model_dir))
        except ClientError as exc:
            raise ModelLoadError(f"SAGEMAKER_SUBMIT_DIRECTORY: {exc}") from exc
        return target
    code = model_dir / "code"
    return code if code.is_dir() else None


def build_handler(config: ServerConfig) -> Handler:
    if config.kind == PIPELINE_KIND:
        from opensage.serving.pipeline import PipelineHandler

        return PipelineHandler(config.model_dir)
    if os.environ.get(MULTI_MODEL_ENV):
        from opensage.serving.multimodel import MultiModelHandler

        return MultiModelHandler.from_environment(config.model_dir, lambda d: model_handler(config, d))
    return model_handler(config, config.model_dir)


def model_handler(config: ServerConfig, model_dir: Path) -> Handler:
    """The handler of ``config.kind`` over one unpacked model (a multi-model server makes one per model)."""
    if config.kind.startswith("builtin-"):
        return BuiltinHandler(_serve_module(config.kind.removeprefix("builtin-")), model_dir)
    code_dir = config.code_dir
    if code_dir is None and model_dir != config.model_dir and (model_dir / "code").is_dir():
        code_dir = model_dir / "code"
    return ScriptHandler(SCRIPT_FRAMEWORKS[config.kind], model_dir, code_dir, config.program, default_accept())


def _serve_module(algorithm: str) -> str:
    from opensage.algorithms.registry import BUILTIN_ALGORITHMS

    for algo in BUILTIN_ALGORITHMS.values():
        if algo.name == algorithm:
            return algo.serve_module
    raise ModelLoadError(f"No built-in algorithm named '{algorithm}' can serve here.")


def maybe_reexec_in_venv(config: ServerConfig, argv: list[str]) -> None:
    """Install ``<code_dir>/requirements.txt`` (cached venv) and re-exec this server under its python."""
    if config.code_dir is None or os.environ.get(REEXEC_ENV):
        return
    from opensage.frameworks import venvs

    env = venvs.python_for(config.code_dir, log=log)
    if env.venv_dir is None:
        return
    os.environ[REEXEC_ENV] = str(env.venv_dir)
    args = [a for a in argv if not a.startswith("--code-dir")]
    log(f"Running the model server under {env.python} (requirements.txt of {config.code_dir})")
    os.execv(env.python, [env.python, "-m", "opensage.serving.model_server", *args,
                          f"--code-dir={config.code_dir}"])


# ------------------------------------------------------------------------------------------ HTTP protocol
class ReadyFlags:
    """One byte per worker in shared memory (created before fork): 1 once that worker's model is loaded,
    so ``/ping`` on any worker says 200 only when every worker can answer."""

    def __init__(self, workers: int) -> None:
        self.memory = mmap.mmap(-1, max(1, workers))
        self.expected = b"\x01" * max(1, workers)

    def set(self, slot: int, value: bool) -> None:
        self.memory[slot] = 1 if value else 0

    def all_set(self) -> bool:
        return self.memory[:] == self.expected


class ServerState:
    """What every connection of one worker process shares."""

    def __init__(self, handler: Handler, max_body_bytes: int, flags: ReadyFlags, slot: int,
                 token: bytes | None = None) -> None:
        self.handler = handler
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.flags = flags
        self.slot = slot
        self.ready = False  # this process's model is loaded
        self.waiting: list[tuple[HttpProtocol, Request, bool]] = []  # invocations that came while loading
        self.draining = False
        threads = int(getattr(handler, "threads", 1))  # a pipeline front waits on its children, not the CPU
        self.executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="predict")
        self.connections: set[HttpProtocol] = set()
        self.in_flight = 0
        self.load_failed = False
        builtin = type(handler).__name__ == "BuiltinHandler"
        self.execution_parameters = _execution_parameters(builtin=builtin)
        # User code may block or be slow (and a pipeline or multi-model handler does I/O): only built-in
        # algorithms answer small requests on the event loop; everything else runs on the predict thread.
        self.inline = builtin and os.environ.get("OPENSAGE_MODEL_SERVER_INLINE", "1") != "0"


def _execution_parameters(builtin: bool = False) -> bytes:
    env = os.environ
    strategy = (env.get("SAGEMAKER_BATCH_STRATEGY") or "MULTI_RECORD").upper()
    # Built-ins can take several requests at once (parsing overlaps prediction); measured faster in batch
    # transform than 1. User code keeps the toolkit's default of 1.
    default_concurrency = max(2, os.cpu_count() or 1) if builtin else 1
    return json.dumps({
        "MaxConcurrentTransforms": int(env.get("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS") or default_concurrency),
        "BatchStrategy": strategy,
        "MaxPayloadInMB": int(float(env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB") or 6)),
    }).encode()


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; one request at a time per connection (pipelined ones wait in order)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._process()

    # -- parsing
    def _process(self) -> None:
        while self.transport is not None and not self.busy and not self.closing:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self._fail(431, "request headers are too large")
                return
            try:
                method, target, version, headers = _parse_head(bytes(self.buffer[:end]))
            except ValueError as exc:
                self._fail(400, str(exc))
                return
            body_start = end + 4
            body = self._take_body(headers, body_start)
            if body is None:
                return  # wait for more bytes (or failed)
            keep_alive = _keep_alive(version, headers)
            self._dispatch(method, target, headers, body, keep_alive)

    def _take_body(self, headers: dict[str, str], start: int) -> bytes | None:
        if headers.get("transfer-encoding", "").lower().endswith("chunked"):
            return self._take_chunked(headers, start)
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            self._fail(400, "Content-Length is not a number")
            return None
        if length > self.state.max_body_bytes:
            self._fail(413, f"the request body ({length} bytes) is larger than the limit "
                            f"({self.state.max_body_bytes} bytes; SAGEMAKER_MAX_PAYLOAD_IN_MB)")
            return None
        if len(self.buffer) - start < length:
            self._continue_if_expected(headers)
            return None
        body = bytes(self.buffer[start:start + length])
        del self.buffer[:start + length]
        return body

    def _take_chunked(self, headers: dict[str, str], start: int) -> bytes | None:
        parts: list[bytes] = []
        pos = start
        total = 0
        while True:
            line_end = self.buffer.find(b"\r\n", pos)
            if line_end < 0:
                self._continue_if_expected(headers)
                return None
            try:
                size = int(bytes(self.buffer[pos:line_end]).split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                self._fail(400, "malformed chunked request body")
                return None
            total += size
            if total > self.state.max_body_bytes:
                self._fail(413, f"the request body is larger than the limit ({self.state.max_body_bytes} bytes)")
                return None
            if size == 0:  # last chunk, then optional trailers, then an empty line
                if self.buffer[line_end + 2:line_end + 4] == b"\r\n":
                    end = line_end + 4
                else:
                    trailers_end = self.buffer.find(b"\r\n\r\n", line_end + 2)
                    if trailers_end < 0:
                        return None
                    end = trailers_end + 4
                del self.buffer[:end]
                return b"".join(parts)
            if len(self.buffer) < line_end + 2 + size + 2:
                return None
            parts.append(bytes(self.buffer[line_end + 2:line_end + 2 + size]))
            pos = line_end + 2 + size + 2

    def _continue_if_expected(self, headers: dict[str, str]) -> None:
        if headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            headers["expect"] = ""  # once
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- routing
    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        path = target.split("?", 1)[0]
        state = self.state
        if state.token is not None and not authorized(headers, state.token):
            self._respond(Response(403, b"missing or wrong replica token", "text/plain"), keep_alive)
            return
        if path == "/invocations":
            if method != "POST":
                self._respond(Response(405, b"use POST /invocations", "text/plain"), keep_alive)
            else:
                request = Request(body, headers.get("content-type"), headers.get("accept"),
                                  headers.get("x-amzn-sagemaker-custom-attributes"),
                                  headers.get("x-amzn-sagemaker-target-model") or None,
                                  headers.get("x-amzn-sagemaker-target-container-hostname") or None)
                if state.ready:
                    self._invoke(request, keep_alive, in_process_loop=True)
                else:  # answered once this worker's model is loaded (the process exits if loading fails)
                    self.busy = True
                    state.waiting.append((self, request, keep_alive))
        elif path == "/ping":
            status = 200 if state.ready and not state.draining and state.flags.all_set() else 503
            self._respond(Response(status, b"" if status == 200 else b"not ready", "text/plain"), keep_alive)
        elif path == "/execution-parameters":
            self._respond(Response(200, state.execution_parameters, "application/json"), keep_alive)
        else:
            self._respond(Response(404, f"no route {method} {path}; the model server serves GET /ping, "
                                        f"POST /invocations and GET /execution-parameters".encode(),
                                   "text/plain"), keep_alive)

    def _invoke(self, request: Request, keep_alive: bool, in_process_loop: bool = False) -> None:
        """``in_process_loop``: called from ``_process``, which goes on with the buffer itself."""
        self.busy = True
        state = self.state
        state.in_flight += 1
        if state.inline and len(request.body) <= INLINE_MAX_BYTES:
            # A small request to a built-in algorithm takes well under a millisecond: answering it on the
            # loop saves two thread hand-offs (~0.1 ms of latency on a busy 2-core host).
            self._invoked(_safe_invoke(state.handler, request), keep_alive, resume=not in_process_loop)
            return
        future = asyncio.get_running_loop().run_in_executor(state.executor, _safe_invoke, state.handler, request)
        future.add_done_callback(lambda fut: self._invoked(fut.result(), keep_alive, resume=True))

    def _invoked(self, response: Response, keep_alive: bool, resume: bool) -> None:
        state = self.state
        state.in_flight -= 1
        self.busy = False
        if response.status >= 400:
            log(f"POST /invocations -> {response.status}: "
                f"{response.body[:2000].decode('utf-8', 'replace').rstrip()}")
        self._respond(response, keep_alive and not state.draining)
        if resume and self.buffer and not self.closing:
            self._process()

    # -- writing
    def _respond(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None:
            return
        head = [f"HTTP/1.1 {response.status} {STATUS_TEXT.get(response.status, 'Status')}\r\n"
                f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"]
        for name, value in response.headers.items():
            if "\r" not in value and "\n" not in value:
                head.append(f"{name}: {value}\r\n")
        if not keep_alive:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        self.transport.write("".join(head).encode("latin-1") + response.body)
        if not keep_alive:
            self.closing = True
            self.transport.close()

    def _fail(self, status: int, message: str) -> None:
        log(f"bad request -> {status}: {message}")
        self.buffer.clear()
        self._respond(Response(status, message.encode(), "text/plain"), keep_alive=False)

    def close_if_idle(self) -> None:
        if not self.busy and self.transport is not None:
            self.closing = True
            self.transport.close()


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"malformed request line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


# ------------------------------------------------------------------------------------------ serving
async def serve(config: ServerConfig, sock: socket.socket, handler: Handler, flags: ReadyFlags,
                slot: int = 0) -> None:
    """Serve on ``sock`` until SIGTERM/SIGINT; load the model in the background meanwhile."""
    loop = asyncio.get_running_loop()
    state = ServerState(handler, config.max_body_bytes, flags, slot, config.token)
    server = await loop.create_server(lambda: HttpProtocol(state), sock=sock, backlog=1024)
    servers = [server]
    if config.unix_sock is not None:  # the router's hop on this machine; same protocol, same token check
        servers.append(await loop.create_unix_server(lambda: HttpProtocol(state), sock=config.unix_sock,
                                                     backlog=1024))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    load_task = loop.run_in_executor(state.executor, _load, handler, config)
    load_task.add_done_callback(lambda fut: _loaded(fut, state, stop))
    await stop.wait()
    await _drain(servers, state)


def _fatal(state: ServerState, stop: asyncio.Event, reason: str) -> None:
    """The handler cannot serve any more (a pipeline container died): exit 1 so the replica is replaced."""
    log(f"stopping: {reason}")
    state.load_failed = True
    stop.set()


def _load(handler: Handler, config: ServerConfig) -> float:
    started = time.monotonic()
    handler.load()
    return time.monotonic() - started


def _loaded(fut: asyncio.Future[float], state: ServerState, stop: asyncio.Event) -> None:
    exc = fut.exception()
    if exc is None:
        watch = getattr(state.handler, "watch", None)
        if watch is not None:
            loop = asyncio.get_running_loop()
            watch(lambda reason: loop.call_soon_threadsafe(_fatal, state, stop, reason))
        state.ready = True
        state.flags.set(state.slot, True)
        log(f"model loaded in {fut.result():.2f} s; ready")
        waiting, state.waiting = state.waiting, []
        for conn, request, keep_alive in waiting:
            conn._invoke(request, keep_alive)
        return
    detail = "".join(traceback.format_exception(exc))
    log(f"could not load the model: {exc}\n{detail}")
    state.load_failed = True
    stop.set()


async def _drain(servers: list[asyncio.Server], state: ServerState) -> None:
    state.draining = True
    for server in servers:
        server.close()  # stop accepting
    waiting, state.waiting = state.waiting, []
    for conn, _request, _keep_alive in waiting:  # stopped before the model loaded
        conn.busy = False
        conn._respond(Response(503, b"the model server is stopping", "text/plain"), keep_alive=False)
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        for conn in list(state.connections):
            conn.close_if_idle()
        if state.in_flight == 0 and not state.connections:
            break
        await asyncio.sleep(0.01)
    state.executor.shutdown(wait=False, cancel_futures=True)
    log(f"stopped ({state.in_flight} request(s) still in flight)" if state.in_flight else "stopped")
    if state.load_failed:
        raise SystemExit(1)


def bind(host: str, port: int, listen_fd: int | None = None) -> socket.socket:
    """The listening socket: the inherited one (``--listen-fd``, bound by the replica manager), else bound here."""
    if listen_fd is not None:
        sock = socket.socket(fileno=listen_fd)
        sock.set_inheritable(False)  # user code's subprocesses do not get it (workers are forked)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def bind_unix(listen_unix_fd: int) -> socket.socket:
    """The inherited Unix socket (``--listen-unix-fd``): bound and listening already, its path unneeded."""
    sock = socket.socket(fileno=listen_unix_fd)
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run_worker(config: ServerConfig, sock: socket.socket, flags: ReadyFlags, slot: int = 0,
               handler: Handler | None = None) -> int:
    handler = handler or build_handler(config)
    try:
        asyncio.run(serve(config, sock, handler, flags, slot))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_pipeline(config: ServerConfig, sock: socket.socket) -> int:
    """The pipeline front: children started from this (main) thread, stopped after the front drains."""
    try:
        handler = build_handler(config)
    except ModelLoadError as exc:
        log(str(exc))
        return 1
    handler.start()  # type: ignore[attr-defined]
    try:
        return run_worker(config, sock, ReadyFlags(1), handler=handler)
    finally:
        handler.close()  # type: ignore[attr-defined]


def run_workers(config: ServerConfig, sock: socket.socket) -> int:
    """Fork ``config.workers`` processes on the shared socket; restart one that dies; SIGTERM them all."""
    children: dict[int, int] = {}
    stopping = False
    flags = ReadyFlags(config.workers)

    def spawn(slot: int) -> None:
        flags.set(slot, False)
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os._exit(run_worker(config, sock, flags, slot))
        children[pid] = slot

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            _kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for slot in range(config.workers):
        spawn(slot)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        slot = children.pop(pid, None)
        if slot is None:
            continue
        exit_code = os.waitstatus_to_exitcode(code)
        if not stopping and exit_code == 1:
            log(f"worker {pid} could not load the model; stopping")
            forward(signal.SIGTERM, None)
            status = 1
        elif not stopping:
            log(f"worker {pid} exited with {exit_code}; starting a new one")
            time.sleep(0.5)
            spawn(slot)
    return status


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_args(argv)
    if config.kind in SCRIPT_FRAMEWORKS and config.code_dir is None:
        try:
            config.code_dir = resolve_code_dir(config.model_dir, os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY"))
        except ModelLoadError as exc:
            log(str(exc))
            return 1
    if config.kind in SCRIPT_FRAMEWORKS:
        maybe_reexec_in_venv(config, argv)
    os.environ.pop(TOKEN_ENV, None)  # the user's code (and what it starts) never sees it
    if config.token is None and not _loopback(config.host):
        log(f"refusing to listen on {config.host} without a replica token ({TOKEN_ENV}): only loopback "
            "servers may answer unauthenticated")
        return 1
    if not config.model_dir.is_dir():
        log(f"model directory {config.model_dir} does not exist (it should hold the unpacked model.tar.gz)")
        return 1
    try:
        sock = bind(config.host, config.port, config.listen_fd)
        if config.listen_unix_fd is not None:
            config.unix_sock = bind_unix(config.listen_unix_fd)
    except OSError as exc:
        log(f"cannot listen on {config.host}:{config.port}: {exc}")
        return 1
    log(f"listening on {config.host}:{config.port} (kind {config.kind}, model {config.model_dir}, "
        f"{config.workers} worker(s))")
    if config.kind == PIPELINE_KIND:
        return run_pipeline(config, sock)
    if config.workers == 1:
        return run_worker(config, sock, ReadyFlags(1))
    return run_workers(config, sock)


if __name__ == "__main__":
    sys.exit(main())
