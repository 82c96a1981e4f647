"""Log store behind the CloudWatch Logs API: groups are implicit, streams and events are rows."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select, update

from opensage.store.schema import log_events, log_streams


@dataclass
class LogEvent:
    id: int
    stream: str
    timestamp: int
    ingestion_time: int
    message: str


class LogRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, group: str, stream: str, events: list[tuple[int, str]], now_ms: int, conn=None) -> None:
        """Add (timestamp-ms, message) events; creates the stream on first use. Pass ``conn`` to join a
        caller's transaction (the tailer commits events and its file offset together)."""
        if conn is None:
            with self.engine.begin() as c:
                self.append(group, stream, events, now_ms, conn=c)
            return
        if not events:
            return
        s = log_streams.c
        exists = conn.execute(select(s.stream_name).where(s.group_name == group, s.stream_name == stream)).first()
        size = sum(len(m) for _, m in events)
        first, last = min(t for t, _ in events), max(t for t, _ in events)
        if exists is None:
            conn.execute(insert(log_streams).values(
                group_name=group, stream_name=stream, creation_time=now_ms, first_event_time=first,
                last_event_time=last, last_ingestion_time=now_ms, stored_bytes=size))
        else:
            conn.execute(update(log_streams).where(s.group_name == group, s.stream_name == stream).values(
                last_event_time=func.max(func.coalesce(s.last_event_time, 0), last),
                last_ingestion_time=now_ms, stored_bytes=s.stored_bytes + size))
        conn.execute(insert(log_events), [
            {"group_name": group, "stream_name": stream, "timestamp": t, "ingestion_time": now_ms, "message": m}
            for t, m in events])

    def group_exists(self, group: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(log_streams.c.stream_name).where(
                log_streams.c.group_name == group).limit(1)).first() is not None

    def streams(self, group: str, prefix: str | None, order_by: str, descending: bool, after: str | None,
                limit: int) -> tuple[list[dict], str | None]:
        s = log_streams.c
        q = select(log_streams).where(s.group_name == group)
        if prefix:
            q = q.where(s.stream_name.startswith(prefix, autoescape=True))
        key = s.last_event_time if order_by == "LastEventTime" else s.stream_name
        offset = int(after) if after else 0
        q = q.order_by(key.desc() if descending else key.asc(), s.stream_name).offset(offset).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = [dict(r._mapping) for r in rows[:limit]]
        return out, (str(offset + limit) if len(rows) > limit else None)

    def events(self, group: str, stream: str | None, after_id: int | None, before_id: int | None,
               start: int | None, end: int | None, limit: int, newest_first: bool,
               stream_prefix: str | None = None, streams: list[str] | None = None,
               contains: str | None = None) -> list[LogEvent]:
        e = log_events.c
        q = select(log_events).where(e.group_name == group)
        if stream is not None:
            q = q.where(e.stream_name == stream)
        if streams:
            q = q.where(e.stream_name.in_(streams))
        if stream_prefix:
            q = q.where(e.stream_name.startswith(stream_prefix, autoescape=True))
        if after_id is not None:
            q = q.where(e.id > after_id)
        if before_id is not None:
            q = q.where(e.id < before_id)
        if start is not None:
            q = q.where(e.timestamp >= start)
        if end is not None:
            q = q.where(e.timestamp < end)
        if contains:
            q = q.where(e.message.contains(contains, autoescape=True))
        q = q.order_by(e.id.desc() if newest_first else e.id.asc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [LogEvent(r.id, r.stream_name, r.timestamp, r.ingestion_time, r.message) for r in rows]
