"""ConcurrentRequestsPerModel (high resolution): model time spread over 10-second periods, each period written
once after it closed, zeros for a live variant's idle periods."""

from __future__ import annotations

import pytest

from opensage.serving.metrics import CONCURRENCY_METRIC
from tests.unit.serving.test_endpoint_metrics import _sample, agg  # noqa: F401  (fixture)

T0 = 1_700_000_000  # a multiple of 10: the FakeClock's start is a period boundary


def test_record_spreads_model_time_over_the_periods_it_overlapped(agg):  # noqa: F811
    agg.d.clock.advance(25)
    agg.record("ep", "v", 1, 15.0, 0.001, 200)  # in the container from T0+10 to T0+25
    agg.record("ep", "v", 2, 4.0, 0.001, 200)  # two instances: each holds half of it
    agg.flush()
    assert _sample(agg, CONCURRENCY_METRIC) == []  # T0+10 closed at T0+20: written from T0+30 (grace)
    agg.d.clock.advance(5)
    agg.flush()
    assert [(s.timestamp, s.total) for s in _sample(agg, CONCURRENCY_METRIC)] == [(T0 + 10, 1.0)]  # 10 s / 10 s
    agg.d.clock.advance(10)  # T0+40: T0+20 closed 10 s ago
    agg.flush()
    points = sorted((s.timestamp, s.count, s.total) for s in _sample(agg, CONCURRENCY_METRIC))
    assert points == [(T0 + 10, 1, 1.0), (T0 + 20, 1, pytest.approx(0.5 + 4.0 / 2 / 10))]
    agg.flush()
    assert len(_sample(agg, CONCURRENCY_METRIC)) == 2  # a period is written once


def test_flush_live_variant_without_requests_writes_zero_per_closed_period(agg):  # noqa: F811
    agg.d.clock.advance(35)  # closed periods end at T0+10 (T0+20 closes at T0+30, written from T0+40)
    agg.flush(live=[("ep", "v")])
    assert [(s.timestamp, s.total) for s in _sample(agg, CONCURRENCY_METRIC)] == [(T0 + 10, 0.0)]
    agg.d.clock.advance(20)
    agg.flush(live=[("ep", "v")])
    agg.flush(live=[("ep", "v")])
    points = sorted((s.timestamp, s.total) for s in _sample(agg, CONCURRENCY_METRIC))
    assert points == [(T0 + 10, 0.0), (T0 + 20, 0.0), (T0 + 30, 0.0)]


def test_shutdown_flush_writes_open_periods(agg):  # noqa: F811
    agg.d.clock.advance(5)
    agg.record("ep", "v", 1, 5.0, 0.001, 200)
    agg.flush(final=True)
    assert [(s.timestamp, s.total) for s in _sample(agg, CONCURRENCY_METRIC)] == [(T0, 0.5)]
