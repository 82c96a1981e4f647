"""Asynchronous inference: a durable FIFO queue of InvokeEndpointAsync requests and the worker that runs them.

Each request is a row of the ``resources`` table (kind ``async-invocation``), so a killed control plane
loses nothing: ``Pending`` rows wait their turn, and rows left ``InProgress`` by a previous process go back
to ``Pending`` on start (delivery is at least once, as on SageMaker). Row names sort in arrival order.

The worker thread (a ReconcileLoop, woken on enqueue) does the blocking parts: SQL, reading the input
from S3, writing the output or failure object. The model-server hop runs as a coroutine on an event loop
(the server's own loop when started from the ASGI lifespan, so the runtime's upstream pool is used on the
loop that owns it); the thread never waits on that loop, it collects finished futures on its next pass.

Per endpoint, at most MaxConcurrentInvocationsPerInstance x (instances in service) requests run at once,
oldest first. A request older than RequestTTLSeconds when its turn comes fails with "request expired"; a
model call longer than InvocationTimeoutSeconds fails as timed out. SNS notifications
(OutputConfig.NotificationConfig) are stored with the request but not sent: there is no SNS here.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opensage.errors import ServiceError
from opensage.objects.base import ObjectNotFound, ObjectStore, split_s3_uri
from opensage.runner.loop import ReconcileLoop
from opensage.services.base import Deps
from opensage.serving.router import Router
from opensage.store.resources import ConcurrentUpdate, Resource

log = logging.getLogger(__name__)

KIND = "async-invocation"
PENDING, IN_PROGRESS, COMPLETED, FAILED = "Pending", "InProgress", "Completed", "Failed"
DEFAULT_TTL_SECONDS = 21600  # RequestTTLSeconds default (6 hours)
DEFAULT_TIMEOUT_SECONDS = 900  # InvocationTimeoutSeconds default (15 minutes)
MAX_ASYNC_PAYLOAD_BYTES = 1024 ** 3  # asynchronous inference takes payloads up to 1 GB
# SageMaker "chooses an optimal value" when ClientConfig.MaxConcurrentInvocationsPerInstance is unset.
DEFAULT_CONCURRENCY_PER_INSTANCE = 4
# A request no instance answered (its fleet was being replaced, e.g. after a restart) is retried with backoff
# capped low: a replaced instance is back within seconds, and the request should run soon after, not up to a
# minute later (with a 30 s cap, a request queued across a restart could wait up to 30 s more after its
# endpoint recovered).
MAX_RETRIES = 30
MAX_BACKOFF_SECONDS = 5.0
RETENTION_SECONDS = 86400  # finished rows are purged after a day
BACKLOG_METRIC_PERIOD = 60.0
NAMESPACE = "AWS/SageMaker"

Invoke = Callable[[dict[str, Any], float], Awaitable[dict[str, Any]]]


@dataclass
class Flight:
    row: Resource
    future: concurrent.futures.Future
    timeout: float


def runtime_invoker(runtime: Any) -> Invoke:
    """RuntimeService.invoke_endpoint as an Invoke, with the asynchronous limits: ``timeout``
    (InvocationTimeoutSeconds) and ``max_payload`` (1 GB)."""
    from opensage.api.dispatch import RequestContext

    def invoke(params: dict[str, Any], timeout: float) -> Awaitable[dict[str, Any]]:
        return runtime.invoke_endpoint(RequestContext(), params, timeout=timeout, max_payload=MAX_ASYNC_PAYLOAD_BYTES)

    return invoke


def put_object(store: ObjectStore, uri: str, data: bytes, content_type: str | None) -> None:
    """Write ``data`` at ``uri``; on S3 with the given Content-Type (the ObjectStore protocol has none)."""
    bucket, key = split_s3_uri(uri)
    from opensage.objects.s3 import S3Store

    if isinstance(store, S3Store) and content_type:
        store.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        return
    store.put_bytes(bucket, key, data)


def get_object(store: ObjectStore, uri: str) -> tuple[bytes, str | None]:
    """The object at ``uri`` and, on S3, its Content-Type (the SDK's AsyncPredictor sets the request's
    content type only there, on the uploaded input)."""
    bucket, key = split_s3_uri(uri)
    from opensage.objects.s3 import S3Store

    if isinstance(store, S3Store):
        try:
            response = store.client.get_object(Bucket=bucket, Key=key)
        except Exception as e:
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise ObjectNotFound(f"{uri} does not exist") from None
            raise
        with response["Body"] as body:
            return body.read(), response.get("ContentType")
    return store.get_bytes(bucket, key), None


class AsyncInferenceWorker(ReconcileLoop):
    def __init__(self, deps: Deps, invoke: Invoke, store_factory: Callable[[], ObjectStore], router: Router,
                 busy_interval: float = 0.2, idle_interval: float = 1.0) -> None:
        self.d = deps
        self.invoke = invoke
        self._store_factory = store_factory
        self._store: ObjectStore | None = None
        self.router = router
        self._init_loop("async-inference", busy_interval, idle_interval)
        self._inflight: dict[str, Flight] = {}  # row name -> the model call running for it
        self._done: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._events: asyncio.AbstractEventLoop | None = None
        self._own_events: threading.Thread | None = None
        self._recovered = False
        self._emitted: dict[str, tuple[float, float]] = {}  # endpoint -> (time, backlog) last written
        self._idle_emitted_at = 0.0  # when the async endpoints without a backlog last got their zeros
        self._purged_at = 0.0

    # -- queue -----------------------------------------------------------------------------------------
    def enqueue(self, request: dict[str, Any], endpoint_arn: str | None = None) -> Resource:
        """Persist one request (see AsyncInferenceService for its keys) and wake the worker."""
        now = self.d.clock.time()
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"  # sorts in arrival order
        row = Resource(kind=KIND, name=name, arn=self.d.arns.sagemaker("async-invocation", name), status=PENDING,
                       creation_time=now, last_modified_time=now, request=request, state={},
                       parent_arn=endpoint_arn)
        self.d.resources.create(row)
        self.wake()
        return row

    def backlog(self, endpoint: str) -> int:
        """Requests of ``endpoint`` queued or running (SageMaker's ApproximateBacklogSize)."""
        rows = self.d.resources.in_status(KIND, (PENDING, IN_PROGRESS))
        return sum(1 for r in rows if r.request["EndpointName"] == endpoint)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run model calls on ``loop``, else on the running loop (the ASGI lifespan's), else on our own."""
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = asyncio.new_event_loop()
                self._own_events = threading.Thread(target=loop.run_forever, name="async-inference-io",
                                                  daemon=True)
                self._own_events.start()
        self._events = loop
        super().start()

    def shutdown(self) -> None:
        """Stop taking work. Calls still running stay InProgress in the store and run again on start."""
        self._stop_loop()
        for flight in self._inflight.values():
            flight.future.cancel()
        if self._own_events is not None and self._events is not None:
            self._events.call_soon_threadsafe(self._events.stop)
            self._own_events.join(timeout=10)

    # -- one pass ----------------------------------------------------------------------------------------
    def run_once(self) -> bool:
        if not self._recovered:
            self._recover()
        self._collect()
        rows = sorted(self.d.resources.in_status(KIND, (PENDING,)), key=lambda r: r.name)
        by_endpoint: dict[str, list[Resource]] = {}
        for row in rows:
            by_endpoint.setdefault(row.request["EndpointName"], []).append(row)
        busy = False
        for endpoint, items in by_endpoint.items():
            busy |= self._start_some(endpoint, items)
        self._emit_backlog(by_endpoint)
        self._purge()
        return busy  # a finishing call wakes the loop; otherwise the idle interval rechecks routes and TTLs

    def _recover(self) -> None:
        """Rows InProgress in the store but not running here were cut off by a restart: queue them again."""
        for row in self.d.resources.in_status(KIND, (IN_PROGRESS,)):
            if row.name not in self._inflight:
                row.status = PENDING
                row.state["Restarts"] = row.state.get("Restarts", 0) + 1
                self._save(row)
        self._recovered = True

    def _start_some(self, endpoint: str, items: list[Resource]) -> bool:
        """Launch the oldest requests that fit; True when a quick next pass is useful."""
        route = self.router.get(endpoint)
        if route is None:
            if self.d.resources.get("endpoint", endpoint) is None:
                for row in items:
                    self._fail(row, f"Endpoint {endpoint} was deleted before the request ran.")
            return False  # not routed yet (creating, or a restart re-adopting its fleet): wait
        instances = sum(len(v.replicas) for v in route.variants)
        running = sum(1 for f in self._inflight.values() if f.row.request["EndpointName"] == endpoint)
        free = _concurrency(items[0].request) * instances - running
        backing_off = False
        for row in items:
            if free <= 0:
                break
            if row.state.get("RetryAt", 0) > self.d.clock.time():
                backing_off = True
                continue
            if not self._expired(row) and self._launch(row):
                free -= 1
        return backing_off

    def _expired(self, row: Resource) -> bool:
        ttl = row.request.get("RequestTTLSeconds") or DEFAULT_TTL_SECONDS
        age = self.d.clock.time() - row.creation_time
        if age <= ttl:
            return False
        self._fail(row, f"Request expired: it waited {age:.0f} seconds in the queue, more than its "
                        f"RequestTTLSeconds of {ttl}.")
        return True

    def _launch(self, row: Resource) -> bool:
        row.status = IN_PROGRESS
        row.state["StartTime"] = self.d.clock.time()
        if not self._save(row):
            return False
        try:
            body, stored_type = self._input(row.request)
        except (ObjectNotFound, ValueError) as e:
            self._fail(row, f"Could not read the input at {row.request.get('InputLocation')}: {e}")
            return False
        params = {k: row.request[k] for k in ("EndpointName", "ContentType", "Accept", "CustomAttributes",
                                              "InferenceId") if row.request.get(k)}
        if "ContentType" not in params and stored_type:
            params["ContentType"] = stored_type
        params["Body"] = body
        timeout = float(row.request.get("InvocationTimeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
        assert self._events is not None, "start() the worker before it runs requests"
        future = asyncio.run_coroutine_threadsafe(_bounded(self.invoke(params, timeout), timeout), self._events)
        self._inflight[row.name] = Flight(row, future, timeout)
        future.add_done_callback(lambda _f, name=row.name: self._finished(name))
        return True

    def _finished(self, name: str) -> None:
        self._done.put(name)  # runs on the event loop: hand over, never block it
        self.wake()

    def _input(self, request: dict[str, Any]) -> tuple[bytes, str | None]:
        if request.get("InlineBody") is not None:
            return base64.b64decode(request["InlineBody"]), None
        return get_object(self.store(), request["InputLocation"])

    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = self._store_factory()
        return self._store

    # -- results -----------------------------------------------------------------------------------------
    def _collect(self) -> None:
        while True:
            try:
                name = self._done.get_nowait()
            except queue.Empty:
                return
            flight = self._inflight.pop(name, None)
            if flight is None or flight.future.cancelled():
                continue
            try:
                self._record(flight)
            except Exception:
                log.exception("async inference %s: could not record the result", flight.row.request["InferenceId"])

    def _record(self, flight: Flight) -> None:
        row = flight.row
        error = flight.future.exception()
        if error is None:
            out = flight.future.result()
            try:
                put_object(self.store(), row.request["OutputLocation"], out.get("Body") or b"", out.get("ContentType"))
            except Exception as e:
                self._fail(row, f"Could not write the output to {row.request['OutputLocation']}: {e}")
                return
            row.status = COMPLETED
            row.state.update(EndTime=self.d.clock.time(), InvokedProductionVariant=out.get("InvokedProductionVariant"))
            self._save(row)
            return
        if isinstance(error, ServiceError) and error.code == "ServiceUnavailable" and \
                row.state.get("Retries", 0) < MAX_RETRIES:
            row.status = PENDING  # the fleet was being replaced: keep the request's place in the queue
            row.state["Retries"] = retries = row.state.get("Retries", 0) + 1
            row.state["RetryAt"] = self.d.clock.time() + min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** retries)
            self._save(row)
            return
        self._fail(row, _describe(error, flight.timeout))

    def _fail(self, row: Resource, message: str) -> None:
        """Write the error where the request says failures go, then mark the row Failed."""
        try:
            put_object(self.store(), row.request["FailureLocation"], message.encode(), "text/plain")
        except Exception as e:
            log.warning("async inference %s: could not write the failure object %s: %s",
                        row.request.get("InferenceId"), row.request.get("FailureLocation"), e)
            message = f"{message} (and writing {row.request.get('FailureLocation')} failed: {e})"
        row.status = FAILED
        row.state.update(EndTime=self.d.clock.time(), FailureReason=message[:1024])
        self._save(row)

    def _save(self, row: Resource) -> bool:
        try:
            self.d.resources.save(row, self.d.clock.time())
            return True
        except ConcurrentUpdate:
            fresh = self.d.resources.get(KIND, row.name)
            log.warning("async inference row %s changed concurrently (now %s)", row.name,
                        fresh.status if fresh else "gone")
            return False

    # -- housekeeping ------------------------------------------------------------------------------------
    def _emit_backlog(self, pending: dict[str, list[Resource]]) -> None:
        """ApproximateBacklogSize(PerInstance) and HasBacklogWithoutCapacity, per endpoint, once a minute.

        Every async endpoint in service gets them, zeros included (as AWS publishes): a target-tracking
        AlarmLow needs 15 consecutive datapoints to scale an idle endpoint in to its MinCapacity."""
        now = self.d.clock.time()
        counts = {ep: sum(1 for r in items if r.status == PENDING) for ep, items in pending.items()}
        if now - self._idle_emitted_at >= BACKLOG_METRIC_PERIOD:
            self._idle_emitted_at = now
            for endpoint in self.d.resources.in_status("endpoint", ("InService", "Updating")):
                if endpoint.state.get("AsyncInferenceConfig"):
                    counts.setdefault(endpoint.name, 0)
        for flight in self._inflight.values():
            ep = flight.row.request["EndpointName"]
            counts[ep] = counts.get(ep, 0) + 1
        for ep, (_, last) in list(self._emitted.items()):
            if last and ep not in counts:
                counts[ep] = 0  # drained: report the zero once
        for ep, backlog in counts.items():
            at, last = self._emitted.get(ep, (0.0, 0.0))
            if now - at < BACKLOG_METRIC_PERIOD and not (backlog == 0 and last):
                continue
            route = self.router.get(ep)
            instances = sum(len(v.replicas) for v in route.variants) if route else 0
            self.d.metrics.put(NAMESPACE, {"EndpointName": ep}, [
                ("ApproximateBacklogSize", now, float(backlog)),
                ("ApproximateBacklogSizePerInstance", now, backlog / instances if instances else float(backlog)),
                ("HasBacklogWithoutCapacity", now, 1.0 if backlog and not instances else 0.0)])
            if backlog:
                self._emitted[ep] = (now, float(backlog))
            else:
                self._emitted.pop(ep, None)

    def _purge(self) -> None:
        now = self.d.clock.time()
        if now - self._purged_at < 600:
            return
        self._purged_at = now
        for row in self.d.resources.in_status(KIND, (COMPLETED, FAILED)):
            if now - row.last_modified_time > RETENTION_SECONDS:
                self.d.resources.delete(KIND, row.name)


async def _bounded(call: Awaitable[dict[str, Any]], timeout: float) -> dict[str, Any]:
    return await asyncio.wait_for(call, timeout)


def _concurrency(request: dict[str, Any]) -> int:
    return int(request.get("MaxConcurrentInvocationsPerInstance") or DEFAULT_CONCURRENCY_PER_INSTANCE)


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, TimeoutError | asyncio.TimeoutError):
        return (f"Invocation timed out: the model did not answer within InvocationTimeoutSeconds "
                f"({timeout:.0f} seconds).")
    if isinstance(error, ServiceError):
        return error.message
    log.error("async inference: unexpected error", exc_info=error)
    return f"Internal failure while running the request: {type(error).__name__}: {error}"
