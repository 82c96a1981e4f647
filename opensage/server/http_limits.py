"""The control plane's HTTP server: uvicorn with limits that hold against idle, slow and numerous clients.

uvicorn's own ``timeout_keep_alive`` is only armed after a response: a connection that never sends a request
(or sends its headers one byte at a time) is kept forever, and each one costs a file descriptor — 20,500
of them left the reconcilers failing with "Too many open files" (issue 7). ``GuardedHttpToolsProtocol``
adds, to uvicorn's httptools protocol:

* a request read deadline: from the connection's start (and from the first byte of each later request on a
  keep-alive connection) the whole request, headers and body, must arrive within ``read_timeout``, or the
  connection is closed. A request that arrives in one piece (the usual case) arms no timer at all;
* a connection cap: past ``max_connections`` open connections a new one is closed as soon as it is
  accepted, so the descriptors the reconcilers, the S3 proxy and the jobs' pipes need stay free. Unlike
  uvicorn's ``limit_concurrency`` (which answers 503 to every request, on every connection, once the count
  is reached) the connections already open keep working.

Idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``, as before.

InvokeEndpoint's fast path (``runtime_app``): POST /endpoints/... goes straight to the runtime route
(``routes.RestJsonEndpoint``) instead of through the whole app (uvicorn's proxy-headers middleware, Starlette's
error and exception middleware, its router), which that route needs none of: it catches its own errors and
answers them AWS-style. Its response head and body leave in one write (``_OneWrite``) instead of two. Each
layer costs little, but this route is on every inference request's critical path (issue 14).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 15.0  # connection start / first byte of a request -> the whole request received
KEEP_ALIVE_SECONDS = 5  # idle time between requests on a keep-alive connection (uvicorn's default)
BACKLOG = 2048  # accept queue: held by the kernel, costs this process no descriptor
GRACEFUL_SHUTDOWN_SECONDS = 5
MAX_CONNECTIONS_CEILING = 4096


class ThrottledLog:
    """At most one line per ``interval`` seconds; the next line says how many were left out meanwhile.

    Refused requests cost the client nothing, so logging each one at INFO lets anyone flood the log.
    """

    def __init__(self, logger: logging.Logger, interval: float,
                 clock: Callable[[], float] = time.monotonic, level: int = logging.INFO,
                 what: str = "refused requests") -> None:
        self.logger, self.interval, self.clock, self.level, self.what = logger, interval, clock, level, what
        self.next_at = float("-inf")
        self.suppressed = 0

    def info(self, msg: str, *args: object) -> None:
        """Log ``msg`` at this log's level, unless one was logged less than ``interval`` seconds ago."""
        now = self.clock()
        if now < self.next_at:
            self.suppressed += 1
            return
        self.next_at = now + self.interval
        if self.suppressed:
            msg += f" (and %d more {self.what} in the last %.0f s, not logged)"
            args = (*args, self.suppressed, self.interval)
            self.suppressed = 0
        self.logger.log(self.level, msg, *args)


# A flood of connections over the cap must not flood the log too.
_over_cap = ThrottledLog(log, 10.0, level=logging.WARNING, what="connections closed over the cap")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request read deadline and a connection cap (class attributes:
    ``guarded_protocol`` makes a subclass with the values wanted)."""

    read_timeout: float = READ_TIMEOUT_SECONDS
    max_connections: int = MAX_CONNECTIONS_CEILING
    runtime_app: Any = None  # the ASGI app that answers POST /endpoints/... directly (None: the whole app does)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._reading = False  # between a request's first byte and its last

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            _over_cap.info("more than %d open connections: closing a new one", self.max_connections)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._reading and self._read_timer is None and not self.transport.is_closing():
            self._arm()  # a request that did not arrive in one piece: it has read_timeout to finish

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True

    def on_headers_complete(self) -> None:
        runtime = self.runtime_app
        if (runtime is None or not self.url.startswith(RUNTIME_PREFIX) or self.expect_100_continue
                or self.parser.get_method() != b"POST"):
            super().on_headers_complete()
            return
        # uvicorn starts (or queues, pipelined) the request's cycle with self.app: hand it the runtime route.
        # Absolute-form or %-encoded paths, other methods and Expect: 100-continue take the whole app.
        app, self.app = self.app, runtime
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:  # created for this request (not an upgrade)
            cycle.transport = _OneWrite(self.transport)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = False
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            self.transport.close()  # an app waiting for the body sees http.disconnect


RUNTIME_PREFIX = b"/endpoints/"
ONE_WRITE_MAX_BODY = 65536  # larger bodies are not copied onto the head: two writes


class _OneWrite:
    """The transport as one response's cycle sees it: the head (the cycle's first write) is held back and
    leaves with the first body write, in one ``write`` (one syscall, one segment for the client to wake on)."""

    __slots__ = ("transport", "head", "passthrough")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.head: bytes | None = None
        self.passthrough = False

    def write(self, data: bytes) -> None:
        if self.passthrough:
            self.transport.write(data)
        elif self.head is None:
            self.head = data
        else:
            head, self.head, self.passthrough = self.head, None, True
            if len(data) < ONE_WRITE_MAX_BODY:
                self.transport.write(head + data)
            else:
                self.transport.write(head)
                self.transport.write(data)

    def close(self) -> None:
        if self.head is not None:  # a head without a body (the app gave up): send what there is, as uvicorn would
            self.transport.write(self.head)
            self.head = None
        self.passthrough = True
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...: the connection's own
        return getattr(self.transport, name)


def guarded_protocol(read_timeout: float, max_connections: int,
                     runtime_app: Any = None) -> type[GuardedHttpToolsProtocol]:
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"read_timeout": read_timeout, "max_connections": max_connections, "runtime_app": runtime_app})


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (a plain shell often starts at 1024); the soft
    limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:  # e.g. a hard limit above the kernel's nr_open
            log.warning("could not raise the open files limit from %d to %d: %s", soft, target, e)
    return soft


def max_connections_for(open_files: int) -> int:
    """A quarter of the descriptors for client connections: the rest stays for the metadata store, the
    jobs' log pipes, model-server connections and the in-process S3 proxy."""
    if open_files == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS_CEILING
    return max(64, min(MAX_CONNECTIONS_CEILING, open_files // 4))


def server_config(app: Any, host: str, port: int, *, open_files: int | None = None,
                  read_timeout: float = READ_TIMEOUT_SECONDS, keep_alive: int = KEEP_ALIVE_SECONDS,
                  max_connections: int | None = None, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration ``opensage up`` serves the control plane with."""
    if max_connections is None:
        if open_files is None:
            open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        max_connections = max_connections_for(open_files)
    from opensage.server.routes import runtime_endpoint  # routes imports this module

    options: dict[str, Any] = {
        "log_level": "warning", "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        "timeout_keep_alive": keep_alive, "backlog": BACKLOG,
        "http": guarded_protocol(read_timeout, max_connections, runtime_endpoint(app)),
    }
    options.update(overrides)
    return uvicorn.Config(app, host=host, port=port, **options)
