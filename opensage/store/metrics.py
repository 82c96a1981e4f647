"""Metric time series (the CloudWatch metrics our jobs and endpoints emit, and PutMetricData's).

A row is one raw sample (metric name, epoch seconds, value). A pre-aggregated *statistic set* (SampleCount,
Sum, Minimum, Maximum: what PutMetricData's StatisticValues and the endpoint-metrics aggregator produce) is
stored as four sibling rows whose metric name carries a hidden suffix (``<name>\\x1fSum`` ...), so one
minute of a busy endpoint costs four rows, not one per request. Readers get both kinds back as ``Sample``
(a raw value is the set (1, v, v, v)); ``list_metrics`` never shows the suffixes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Engine, insert, or_, select

from opensage.store.schema import metric_data

STAT_SEP = "\x1f"  # not allowed in CloudWatch metric names (ASCII control character)
STAT_PARTS = ("SampleCount", "Sum", "Minimum", "Maximum")
_ESCAPE = re.compile(r"([\\,=])")


@dataclass(frozen=True)
class Sample:
    """A statistic set at one timestamp; a raw value v is Sample(t, 1, v, v, v)."""

    timestamp: float
    count: float
    total: float
    minimum: float
    maximum: float


def _esc(text: str) -> str:
    return _ESCAPE.sub(r"\\\1", text)


def dimension_key(dimensions: dict[str, str]) -> str:
    """Canonical "k=v,k2=v2" (sorted; ``\\``, ``,`` and ``=`` inside names/values backslash-escaped)."""
    return ",".join(f"{_esc(k)}={_esc(v)}" for k, v in sorted(dimensions.items()))


def parse_dimension_key(key: str) -> dict[str, str]:
    """Inverse of ``dimension_key``."""
    out: dict[str, str] = {}
    name: str | None = None
    cur: list[str] = []
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            cur.append(next(chars, ""))
        elif ch == "=" and name is None:
            name, cur = "".join(cur), []
        elif ch == ",":
            out[name or ""] = "".join(cur)
            name, cur = None, []
        else:
            cur.append(ch)
    if key:
        out[name or ""] = "".join(cur)
    return out


class MetricRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _insert(self, rows: list[dict], conn=None) -> None:
        if not rows:
            return
        if conn is None:
            with self.engine.begin() as c:
                c.execute(insert(metric_data), rows)
        else:
            conn.execute(insert(metric_data), rows)

    def put(self, namespace: str, dimensions: dict[str, str], points: list[tuple[str, float, float]],
            conn=None) -> None:
        """points: (metric name, epoch seconds, value)."""
        key = dimension_key(dimensions)
        self._insert([{"namespace": namespace, "metric_name": n, "dimensions": key, "timestamp": t, "value": v}
                      for n, t, v in points], conn)

    def put_stats(self, namespace: str, dimensions: dict[str, str],
                  sets: list[tuple[str, float, float, float, float, float]], conn=None) -> None:
        """sets: (metric name, epoch seconds, sample count, sum, minimum, maximum)."""
        key = dimension_key(dimensions)
        rows = []
        for name, t, count, total, lo, hi in sets:
            for part, value in zip(STAT_PARTS, (count, total, lo, hi), strict=True):
                rows.append({"namespace": namespace, "metric_name": f"{name}{STAT_SEP}{part}", "dimensions": key,
                             "timestamp": t, "value": value})
        self._insert(rows, conn)

    def series(self, namespace: str, dimensions: dict[str, str], metric: str,
               start: float | None = None, end: float | None = None) -> list[tuple[float, float]]:
        """(timestamp, value) oldest first; a statistic set counts as its Sum (so summing gives totals)."""
        return [(x.timestamp, x.total) for x in self.samples(namespace, dimensions, metric, start, end)]

    def samples(self, namespace: str, dimensions: dict[str, str], metric: str, start: float | None = None,
                end: float | None = None) -> list[Sample]:
        """Raw values and statistic sets in [start, end), oldest first; sets at one timestamp are merged."""
        m = metric_data.c
        names = [metric] + [f"{metric}{STAT_SEP}{p}" for p in STAT_PARTS]
        q = (select(m.metric_name, m.timestamp, m.value)
             .where(m.namespace == namespace, m.dimensions == dimension_key(dimensions),
                    m.metric_name.in_(names))
             .order_by(m.timestamp, m.id))
        if start is not None:
            q = q.where(m.timestamp >= start)
        if end is not None:
            q = q.where(m.timestamp < end)
        out: list[Sample] = []
        sets: dict[float, dict[str, float]] = {}
        with self.engine.connect() as conn:
            for name, t, v in conn.execute(q):
                if name == metric:
                    out.append(Sample(t, 1.0, v, v, v))
                else:
                    _merge_part(sets.setdefault(t, {}), name.rpartition(STAT_SEP)[2], v)
        out.extend(Sample(t, p.get("SampleCount", 0.0), p.get("Sum", 0.0), p.get("Minimum", 0.0),
                          p.get("Maximum", 0.0)) for t, p in sets.items())
        out.sort(key=lambda s: s.timestamp)
        return out

    def list_metrics(self, namespace: str | None = None, metric: str | None = None,
                     since: float | None = None) -> list[tuple[str, str, str]]:
        """Distinct (namespace, metric name, dimension key), sorted; hidden statistic suffixes removed."""
        m = metric_data.c
        q = select(m.namespace, m.metric_name, m.dimensions).distinct()
        if namespace is not None:
            q = q.where(m.namespace == namespace)
        if metric is not None:
            q = q.where(or_(m.metric_name == metric, m.metric_name.like(f"{metric}{STAT_SEP}%")))
        if since is not None:
            q = q.where(m.timestamp >= since)
        with self.engine.connect() as conn:
            found = {(ns, name.partition(STAT_SEP)[0], dims) for ns, name, dims in conn.execute(q)}
        if metric is not None:  # LIKE treats "_" and "%" in the name as wildcards
            found = {f for f in found if f[1] == metric}
        return sorted(found)


def _merge_part(parts: dict[str, float], part: str, value: float) -> None:
    """Several statistic sets stored at one timestamp combine: counts and sums add, extremes widen."""
    if part not in parts:
        parts[part] = value
    elif part in ("SampleCount", "Sum"):
        parts[part] += value
    elif part == "Minimum":
        parts[part] = min(parts[part], value)
    else:
        parts[part] = max(parts[part], value)
