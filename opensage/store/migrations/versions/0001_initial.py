"""initial schema: resources, tags, logs, metrics

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resources",
        sa.Column("kind", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("arn", sa.String(512), nullable=False, unique=True),
        sa.Column("status", sa.String(64), nullable=False),
        sa.Column("creation_time", sa.Float, nullable=False),
        sa.Column("last_modified_time", sa.Float, nullable=False),
        sa.Column("parent_arn", sa.String(512)),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_resources_kind_creation", "resources", ["kind", "creation_time", "name"])
    op.create_index("ix_resources_kind_status", "resources", ["kind", "status", "name"])
    op.create_index("ix_resources_parent", "resources", ["parent_arn"])
    op.create_table(
        "tags",
        sa.Column("arn", sa.String(512), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "log_streams",
        sa.Column("group_name", sa.String(512), primary_key=True),
        sa.Column("stream_name", sa.String(512), primary_key=True),
        sa.Column("creation_time", sa.Integer, nullable=False),
        sa.Column("first_event_time", sa.Integer),
        sa.Column("last_event_time", sa.Integer),
        sa.Column("last_ingestion_time", sa.Integer),
        sa.Column("stored_bytes", sa.Integer, nullable=False),
    )
    op.create_table(
        "log_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("group_name", sa.String(512), nullable=False),
        sa.Column("stream_name", sa.String(512), nullable=False),
        sa.Column("timestamp", sa.Integer, nullable=False),
        sa.Column("ingestion_time", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_log_events_stream", "log_events", ["group_name", "stream_name", "id"])
    op.create_table(
        "metric_data",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("namespace", sa.String(256), nullable=False),
        sa.Column("metric_name", sa.String(256), nullable=False),
        sa.Column("dimensions", sa.String(1024), nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("value", sa.Float, nullable=False),
    )
    op.create_index("ix_metric_data_lookup", "metric_data", ["namespace", "dimensions", "metric_name", "timestamp"])


def downgrade() -> None:
    for table in ("metric_data", "log_events", "log_streams", "tags", "resources"):
        op.drop_table(table)
