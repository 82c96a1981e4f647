"""Endpoint-metrics aggregator: per-minute statistic sets, flush semantics, /proc sampling."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from opensage.clock import FakeClock
from opensage.serving.metrics import INVOCATION_NAMESPACE, CpuSampler, EndpointMetrics, ProcessTree
from opensage.store.db import make_engine, migrate
from opensage.store.metrics import MetricRepository


@dataclass
class _Deps:
    clock: FakeClock
    metrics: MetricRepository


@pytest.fixture
def agg(tmp_path) -> EndpointMetrics:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine)
    return EndpointMetrics(_Deps(FakeClock(1_700_000_000.0), MetricRepository(engine)))


def _sample(agg: EndpointMetrics, metric: str):
    dims = {"EndpointName": "ep", "VariantName": "v"}
    return agg.d.metrics.samples(INVOCATION_NAMESPACE, dims, metric, 0.0, 2e9)


def test_record_then_flush_writes_one_statistic_set_per_metric_minute(agg):
    for status in (200, 200, 200, 400, 503):
        agg.record("ep", "v", 2, 0.002, 0.0005, status)
    agg.record("ep", "v", 2, None, 0.001, None)  # the model never answered
    assert agg.flush() == 7
    minute = 1_700_000_000 // 60 * 60
    (inv,) = _sample(agg, "Invocations")
    assert (inv.timestamp, inv.count, inv.total) == (minute, 6, 6)
    (per,) = _sample(agg, "InvocationsPerInstance")
    assert per.total == pytest.approx(3.0)
    (lat,) = _sample(agg, "ModelLatency")
    assert (lat.count, lat.minimum) == (5, pytest.approx(2000.0))
    (over,) = _sample(agg, "OverheadLatency")
    assert (over.count, over.maximum) == (6, pytest.approx(1000.0))
    assert [_sample(agg, m)[0].total for m in ("Invocation4XXErrors", "Invocation5XXErrors",
                                               "InvocationModelErrors")] == [1, 1, 3]
    assert agg.flush() == 0  # nothing new


def test_two_flushes_in_one_minute_add_up(agg):
    agg.record("ep", "v", 1, 0.001, 0.0001, 200)
    agg.flush()
    agg.record("ep", "v", 1, 0.003, 0.0001, 200)
    agg.flush()
    (lat,) = _sample(agg, "ModelLatency")
    assert (lat.count, lat.total, lat.maximum) == (2, pytest.approx(4000.0), pytest.approx(3000.0))


def test_records_in_different_minutes_are_separate_buckets(agg):
    agg.record("ep", "v", 1, 0.001, 0.0001, 200)
    agg.d.clock.advance(60)
    agg.record("ep", "v", 1, 0.001, 0.0001, 200)
    agg.flush()
    assert [s.count for s in _sample(agg, "Invocations")] == [1, 1]


def test_process_tree_family_includes_children_and_cpu_is_measured():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.6: pass"])
    try:
        import os

        sampler = CpuSampler()
        tree = ProcessTree.scan()
        family = tree.family(os.getpid())
        assert child.pid in family and os.getpid() in family
        assert 0 < tree.memory_percent(family) < 100
        assert sampler.percent(1, sum(tree.cpu_ticks(p) for p in family)) is None
        time.sleep(0.4)
        tree = ProcessTree.scan()
        busy = sampler.percent(1, sum(tree.cpu_ticks(p) for p in tree.family(os.getpid())))
        assert busy is not None and busy > 5  # the child spins (a share of) a core
    finally:
        child.wait()
    assert ProcessTree.scan().family(child.pid) == []


def test_record_takes_no_lock_on_the_request_path(agg):
    """A flusher holding the aggregation lock never makes an InvokeEndpoint wait."""
    import threading

    done = threading.Event()
    with agg._lock:
        worker = threading.Thread(target=lambda: (agg.record("ep", "v", 1, 0.001, 0.0001, 200), done.set()))
        worker.start()
        assert done.wait(5), "record waited for the flusher's lock"
    worker.join()
    assert agg.flush() == 7
    assert _sample(agg, "Invocations")[0].count == 1


def test_record_folds_itself_past_max_unfolded(agg, monkeypatch):
    """A stalled flusher cannot make the unfolded records grow without bound; nothing is lost."""
    from opensage.serving import metrics

    monkeypatch.setattr(metrics, "MAX_UNFOLDED", 10)
    for _ in range(25):
        agg.record("ep", "v", 1, 0.001, 0.0001, 200)
    assert len(agg._unfolded) <= 10
    agg.flush()
    assert _sample(agg, "Invocations")[0].count == 25
