"""Metric time series (the CloudWatch metrics our jobs and endpoints emit)."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select

from opensage.store.schema import metric_data


def dimension_key(dimensions: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(dimensions.items()))


class MetricRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, namespace: str, dimensions: dict[str, str], points: list[tuple[str, float, float]],
            conn=None) -> None:
        """points: (metric name, epoch seconds, value)."""
        if not points:
            return
        rows = [{"namespace": namespace, "metric_name": n, "dimensions": dimension_key(dimensions),
                 "timestamp": t, "value": v} for n, t, v in points]
        if conn is None:
            with self.engine.begin() as c:
                c.execute(insert(metric_data), rows)
        else:
            conn.execute(insert(metric_data), rows)

    def series(self, namespace: str, dimensions: dict[str, str], metric: str,
               start: float | None = None, end: float | None = None) -> list[tuple[float, float]]:
        m = metric_data.c
        q = select(m.timestamp, m.value).where(m.namespace == namespace, m.metric_name == metric,
                                               m.dimensions == dimension_key(dimensions))
        if start is not None:
            q = q.where(m.timestamp >= start)
        if end is not None:
            q = q.where(m.timestamp < end)
        with self.engine.connect() as conn:
            return [(r.timestamp, r.value) for r in conn.execute(q.order_by(m.timestamp, m.id))]
