"""The state store's tables: one SQLAlchemy Core `MetaData` and the `Table` objects in it.

Invariants:

- Every time column is `UTCDateTime`: writes require aware datetimes and store UTC;
  reads return aware UTC datetimes on every backend (SQLite keeps no zone, so the
  zone is restored on read).
- JSON columns are `JSONB` on PostgreSQL and JSON text elsewhere.
- Tables carry no schema: the connection's search_path (PostgreSQL) chooses it.
- Constraint names follow `NAMING_CONVENTION`, so `migrations/versions/*` can name them
  explicitly and stay equal to these definitions (a contract test compares the two).

Does not create tables: the Alembic migrations in `migrations/` do, and they spell
every table out instead of importing this module, so old revisions never change.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}

FILE_KINDS = ("settings", "teams", "profile", "query", "schedule", "job", "asset")
"""The kinds of repo file `applied_files` indexes."""

FIRE_OUTCOMES = ("FIRED", "SKIPPED", "MISSED")
"""The decisions the fire ledger records for one scheduled time."""

STATE_ROW_ID = 1
"""The id of the single row of `state`."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is written and read as an aware UTC datetime on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; the store takes aware UTC")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def json_type(*, none_as_null: bool = False) -> TypeEngine[Any]:
    """JSON text on SQLite, JSONB on PostgreSQL; `none_as_null` stores Python None as SQL NULL."""
    return JSON(none_as_null=none_as_null).with_variant(
        JSONB(none_as_null=none_as_null), "postgresql"
    )


metadata = MetaData(naming_convention=NAMING_CONVENTION)

COMMIT = String(40)
"""A full git SHA (commit or blob)."""

state = Table(
    "state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("serial", Integer, nullable=False, server_default="0"),
    Column("commit", COMMIT, nullable=True),
    Column("main_tip", COMMIT, nullable=True),
    Column("apply_id", Integer, nullable=True),
    Column("applied_at", UTCDateTime, nullable=True),
    Column("rows_hash", String(64), nullable=True),
    CheckConstraint(f"id = {STATE_ROW_ID}", name="single_row"),
)

applied_jobs = Table(
    "applied_jobs",
    metadata,
    Column("job_id", String(255), primary_key=True),
    Column("version", COMMIT, nullable=False),
    Column("commit", COMMIT, nullable=False),
    Column("content_hash", String(128), nullable=False),
    Column("input_blobs", json_type(), nullable=False),
    Column("definition", json_type(), nullable=False),
    Column("applied_serial", Integer, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
)

applied_files = Table(
    "applied_files",
    metadata,
    Column("path", String(1024), primary_key=True),
    Column("blob", COMMIT, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("parsed", json_type(none_as_null=True), nullable=True),
    Column("applied_serial", Integer, nullable=False),
    CheckConstraint("kind IN (" + ", ".join(f"'{kind}'" for kind in FILE_KINDS) + ")", name="kind"),
)

applies = Table(
    "applies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("serial", Integer, nullable=False),
    Column("commit", COMMIT, nullable=False),
    Column("main_tip", COMMIT, nullable=True),
    Column("user", String(255), nullable=False),
    Column("commit_author", String(512), nullable=True),
    Column("applied_at", UTCDateTime, nullable=False),
    Column("summary", json_type(), nullable=False),
    Column("plan", json_type(none_as_null=True), nullable=True),
    UniqueConstraint("serial"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(35), primary_key=True),
    Column("attempt", Integer, nullable=False, server_default="0"),
    Column("previous_run_id", String(35), nullable=True),
    Column("trigger", String(255), nullable=False),
    Column("job_id", String(255), nullable=False),
    Column("commit", COMMIT, nullable=False),
    Column("version", COMMIT, nullable=True),
    Column("draft_ref", String(255), nullable=True),
    Column("started_on", UTCDateTime, nullable=True),
    Column("last_modified_on", UTCDateTime, nullable=False),
    Column("completed_on", UTCDateTime, nullable=True),
    Column("state", String(16), nullable=False),
    Column("arguments", json_type(), nullable=False),
    Column("error_message", Text, nullable=True),
    Column("execution_time", Integer, nullable=True),
    Column("timeout", Integer, nullable=True),
    Column("profile", json_type(none_as_null=True), nullable=True),
    Column("snapshots", json_type(none_as_null=True), nullable=True),
    Column("predecessors", json_type(none_as_null=True), nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("log_location", Text, nullable=True),
    Column("target", String(64), nullable=False),
    Column("supervisor_pid", Integer, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("details", json_type(), nullable=False, server_default=text("'{}'")),
    Column("host", String(255), nullable=True),
    Index(None, "job_id", "created_at"),
    Index(None, "state", "created_at"),
)

fires = Table(
    "fires",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(255), nullable=False),
    Column("schedule_id", String(255), nullable=False),
    Column("scheduled_at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(255), nullable=True),
    Column("run_id", String(35), nullable=True),
    Column("decided_at", UTCDateTime, nullable=False),
    Column("overflow_count", Integer, nullable=False, server_default="0"),
    Column("lateness_ms", Integer, nullable=True),
    UniqueConstraint("job_id", "schedule_id", "scheduled_at"),
    Index(None, "scheduled_at"),
    CheckConstraint(
        "outcome IN (" + ", ".join(f"'{o}'" for o in FIRE_OUTCOMES) + ")", name="outcome"
    ),
)

bookmarks = Table(
    "bookmarks",
    metadata,
    Column("job_id", String(255), primary_key=True),
    Column("value", json_type(), nullable=False),
    Column("run_id", String(35), nullable=True),
    Column("committed_at", UTCDateTime, nullable=False),
    Column("previous", json_type(none_as_null=True), nullable=True),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("renewed_at", UTCDateTime, nullable=False),
    Column("replica", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
)

schedule_cursors = Table(
    "schedule_cursors",
    metadata,
    Column("job_id", String(255), primary_key=True),
    Column("schedule_id", String(255), primary_key=True),
    Column("cursor_at", UTCDateTime, nullable=False),
    Column("definition_hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

loop_state = Table(
    "loop_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", json_type(), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user", String(255), nullable=False),
    Column("token_hash", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    UniqueConstraint("token_hash"),
)
