"""The async-inference queue: FIFO per endpoint, bounded concurrency, TTL, timeout, restart recovery, metrics.

The model call is a coroutine written here (the worker's boundary); queue rows live in a real SQLite store,
objects in a MemoryStore.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from opensage.arns import ArnBuilder
from opensage.clock import FakeClock
from opensage.errors import ServiceError
from opensage.objects.memory import MemoryStore
from opensage.services.base import Deps
from opensage.serving.async_worker import KIND, AsyncInferenceWorker
from opensage.serving.router import EndpointRoute, Router, VariantRoute
from opensage.settings import Settings
from opensage.store.db import make_engine, migrate
from opensage.store.logs import LogRepository
from opensage.store.metrics import MetricRepository
from opensage.store.resources import ResourceRepository
from opensage.store.tags import TagRepository


class FakeModel:
    """Answers ``Body`` upper-cased after ``delay`` seconds; records call order and peak concurrency."""

    def __init__(self, delay: float = 0.05, error: ServiceError | None = None) -> None:
        self.delay = delay
        self.error = error
        self.calls: list[str] = []
        self.running = 0
        self.peak = 0

    async def __call__(self, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.calls.append(params["InferenceId"])
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.error is not None:
                raise self.error
            return {"Body": params["Body"].upper(), "ContentType": "text/plain"}
        finally:
            self.running -= 1


@pytest.fixture
def env(tmp_path) -> Iterator[tuple[Deps, MemoryStore, Router]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    settings = Settings.build(tmp_path / "home")
    deps = Deps(settings=settings, clock=FakeClock(time.time()), arns=ArnBuilder("us-east-1", "000000000000"),
                resources=ResourceRepository(engine), tags=TagRepository(engine), logs=LogRepository(engine),
                metrics=MetricRepository(engine))
    store = MemoryStore()
    store.ensure_bucket("bkt")
    router = Router()
    router.set("ep", EndpointRoute([VariantRoute("AllTraffic", 1.0, ["http://127.0.0.1:1"])]))
    yield deps, store, router


def _worker(env, model) -> AsyncInferenceWorker:
    deps, store, router = env
    return AsyncInferenceWorker(deps, model, lambda: store, router, busy_interval=0.01)


def _enqueue(worker: AsyncInferenceWorker, store: MemoryStore, i: int, **extra) -> str:
    store.put_bytes("bkt", f"in/{i}", f"payload {i}".encode())
    request = {"EndpointName": "ep", "InferenceId": f"id-{i}", "InputLocation": f"s3://bkt/in/{i}",
               "OutputLocation": f"s3://bkt/out/id-{i}.out", "FailureLocation": f"s3://bkt/fail/id-{i}-error.out",
               "ContentType": "text/plain"}
    request.update(extra)
    worker.enqueue(request)
    return f"id-{i}"


def _wait_done(deps: Deps, n: int, timeout: float = 8.0) -> list:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = deps.resources.in_status(KIND, ("Completed", "Failed"))
        if len(done) >= n:
            return done
        time.sleep(0.02)
    raise AssertionError(f"only {len(deps.resources.in_status(KIND, ('Completed', 'Failed')))} of {n} finished")


def test_worker_runs_requests_fifo_and_writes_outputs(env):
    deps, store, _ = env
    model = FakeModel()
    worker = _worker(env, model)
    ids = [_enqueue(worker, store, i, MaxConcurrentInvocationsPerInstance=1) for i in range(5)]
    worker.start()
    try:
        _wait_done(deps, 5)
    finally:
        worker.shutdown()
    assert model.calls == ids
    assert model.peak == 1
    assert store.get_bytes("bkt", "out/id-3.out") == b"PAYLOAD 3"


def test_worker_concurrency_is_per_instance_times_instances(env):
    deps, store, router = env
    router.set("ep", EndpointRoute([VariantRoute("A", 1.0, ["http://h:1", "http://h:2"])]))
    model = FakeModel(delay=0.2)
    worker = _worker(env, model)
    for i in range(12):
        _enqueue(worker, store, i, MaxConcurrentInvocationsPerInstance=2)
    worker.start()
    try:
        _wait_done(deps, 12)
    finally:
        worker.shutdown()
    assert model.peak == 4


def test_worker_expired_request_writes_failure_without_calling_model(env):
    deps, store, _ = env
    model = FakeModel()
    worker = _worker(env, model)
    _enqueue(worker, store, 1, RequestTTLSeconds=60)
    deps.clock.advance(61)
    worker.start()
    try:
        (row,) = _wait_done(deps, 1)
    finally:
        worker.shutdown()
    assert row.status == "Failed" and model.calls == []
    assert b"Request expired" in store.get_bytes("bkt", "fail/id-1-error.out")


def test_worker_slow_model_fails_with_invocation_timeout(env):
    deps, store, _ = env
    worker = _worker(env, FakeModel(delay=5))
    _enqueue(worker, store, 1, InvocationTimeoutSeconds=0.2)
    worker.start()
    try:
        (row,) = _wait_done(deps, 1)
    finally:
        worker.shutdown()
    assert row.status == "Failed"
    assert b"InvocationTimeoutSeconds" in store.get_bytes("bkt", "fail/id-1-error.out")


def test_worker_model_error_message_goes_to_failure_object(env):
    deps, store, _ = env
    worker = _worker(env, FakeModel(error=ServiceError("Received client error (400) from primary", code="ModelError")))
    _enqueue(worker, store, 1)
    worker.start()
    try:
        _wait_done(deps, 1)
    finally:
        worker.shutdown()
    assert store.get_bytes("bkt", "fail/id-1-error.out") == b"Received client error (400) from primary"
    assert not store.exists("bkt", "out/id-1.out")


def test_worker_missing_input_fails_request(env):
    deps, store, _ = env
    worker = _worker(env, FakeModel())
    _enqueue(worker, store, 1, InputLocation="s3://bkt/nope")
    worker.start()
    try:
        (row,) = _wait_done(deps, 1)
    finally:
        worker.shutdown()
    assert "s3://bkt/nope" in row.state["FailureReason"]


def test_worker_reruns_rows_left_in_progress_by_a_previous_process(env):
    deps, store, _ = env
    first = _worker(env, FakeModel())
    _enqueue(first, store, 1)
    (row,) = deps.resources.in_status(KIND, ("Pending",))
    row.status = "InProgress"  # what a process killed mid-call leaves behind
    deps.resources.save(row, deps.clock.time())
    model = FakeModel()
    second = _worker(env, model)
    second.start()
    try:
        (done,) = _wait_done(deps, 1)
    finally:
        second.shutdown()
    assert done.status == "Completed" and model.calls == ["id-1"] and done.state["Restarts"] == 1


def test_worker_request_for_deleted_endpoint_fails(env):
    deps, store, router = env
    router.remove("ep")
    model = FakeModel()
    worker = _worker(env, model)
    _enqueue(worker, store, 1)
    worker.start()
    try:
        _wait_done(deps, 1, timeout=3)  # no endpoint row at all: the request fails
    finally:
        worker.shutdown()
    assert b"was deleted" in store.get_bytes("bkt", "fail/id-1-error.out") and model.calls == []


def test_worker_emits_backlog_metrics(env):
    deps, store, _ = env
    worker = _worker(env, FakeModel(delay=0.3))
    for i in range(3):
        _enqueue(worker, store, i, MaxConcurrentInvocationsPerInstance=1)
    worker.start()
    try:
        _wait_done(deps, 3)
        time.sleep(0.1)
    finally:
        worker.shutdown()
    sizes = [v for _, v in deps.metrics.series("AWS/SageMaker", {"EndpointName": "ep"}, "ApproximateBacklogSize")]
    assert sizes[0] == 3 and sizes[-1] == 0


def test_runtime_invoker_passes_async_timeout_and_payload_limit():
    from opensage.serving.async_worker import MAX_ASYNC_PAYLOAD_BYTES, runtime_invoker

    seen: list[dict] = []

    class Runtime:
        async def invoke_endpoint(self, ctx, params, *, timeout: float = 60.0, max_payload: int = 1):
            seen.append({"timeout": timeout, "max_payload": max_payload})
            return {}

    asyncio.run(runtime_invoker(Runtime())({"EndpointName": "ep"}, 30.0))
    assert seen == [{"timeout": 30.0, "max_payload": MAX_ASYNC_PAYLOAD_BYTES}]


def test_worker_idle_async_endpoint_gets_zero_backlog_every_minute(env):
    """An async endpoint with nothing queued still publishes its backlog metrics (zeros) once a minute, so a
    target-tracking AlarmLow can collect the datapoints that scale it in."""
    from opensage.store.resources import Resource

    deps, _, _ = env
    now = deps.clock.time()
    deps.resources.create(Resource("endpoint", "ep", "arn:aws:sagemaker:us-east-1:000000000000:endpoint/ep",
                                   "InService", now, now, {}, {"AsyncInferenceConfig": {"OutputConfig": {}}}))
    deps.resources.create(Resource("endpoint", "sync-ep", "arn:aws:sagemaker:us-east-1:000000000000:endpoint/s",
                                   "InService", now, now, {}, {}))
    worker = _worker(env, FakeModel())
    for _ in range(3):
        worker.run_once()
        worker.run_once()  # a second pass within the minute adds nothing
        deps.clock.advance(60)
    sizes = [v for _, v in deps.metrics.series("AWS/SageMaker", {"EndpointName": "ep"}, "ApproximateBacklogSize")]
    assert sizes == [0.0, 0.0, 0.0]
    assert deps.metrics.series("AWS/SageMaker", {"EndpointName": "sync-ep"}, "ApproximateBacklogSize") == []
