"""Tables. Change them only together with a new Alembic revision in store/migrations/versions."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

# Every SageMaker resource family shares one table: indexed columns for filtering and keyset paging, the
# validated request and the runtime state as JSON. ``version`` makes status changes compare-and-set.
resources = Table(
    "resources",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("name", String(256), primary_key=True),
    Column("arn", String(512), nullable=False, unique=True),
    Column("status", String(64), nullable=False),
    Column("creation_time", Float, nullable=False),
    Column("last_modified_time", Float, nullable=False),
    Column("parent_arn", String(512)),  # e.g. the tuning job of a training job
    Column("request", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Index("ix_resources_kind_creation", "kind", "creation_time", "name"),
    Index("ix_resources_kind_status", "kind", "status", "name"),
    Index("ix_resources_parent", "parent_arn"),
)

tags = Table(
    "tags",
    metadata,
    Column("arn", String(512), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", String(256), nullable=False),
)

log_streams = Table(
    "log_streams",
    metadata,
    Column("group_name", String(512), primary_key=True),
    Column("stream_name", String(512), primary_key=True),
    Column("creation_time", Integer, nullable=False),  # epoch ms, as CloudWatch Logs
    Column("first_event_time", Integer),
    Column("last_event_time", Integer),
    Column("last_ingestion_time", Integer),
    Column("stored_bytes", Integer, nullable=False, default=0),
)

log_events = Table(
    "log_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("group_name", String(512), nullable=False),
    Column("stream_name", String(512), nullable=False),
    Column("timestamp", Integer, nullable=False),
    Column("ingestion_time", Integer, nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_log_events_stream", "group_name", "stream_name", "id"),
)

metric_data = Table(
    "metric_data",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(256), nullable=False),
    Column("metric_name", String(256), nullable=False),
    Column("dimensions", String(1024), nullable=False),  # canonical "k=v,k2=v2"
    Column("timestamp", Float, nullable=False),
    Column("value", Float, nullable=False),
    Index("ix_metric_data_lookup", "namespace", "dimensions", "metric_name", "timestamp"),
)
