"""The initial state store: applied definitions, applies, runs, fires, bookmarks, leases, tokens.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Spelled out table by table (not imported from `reconciler.store.tables`), so this
revision stays what it was when later revisions change the tables.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _sha() -> sa.String:
    return sa.String(40)


def upgrade() -> None:
    op.create_table(
        "state",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("serial", sa.Integer, nullable=False, server_default="0"),
        sa.Column("commit", _sha(), nullable=True),
        sa.Column("main_tip", _sha(), nullable=True),
        sa.Column("apply_id", sa.Integer, nullable=True),
        sa.Column("applied_at", _time(), nullable=True),
        sa.Column("rows_hash", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_state"),
        sa.CheckConstraint("id = 1", name="ck_state_single_row"),
    )
    op.create_table(
        "applied_jobs",
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("version", _sha(), nullable=False),
        sa.Column("commit", _sha(), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("input_blobs", _json(), nullable=False),
        sa.Column("definition", _json(), nullable=False),
        sa.Column("applied_serial", sa.Integer, nullable=False),
        sa.Column("applied_at", _time(), nullable=False),
        sa.Column("deleted_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name="pk_applied_jobs"),
    )
    op.create_table(
        "applied_files",
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("blob", _sha(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("parsed", _json(), nullable=True),
        sa.Column("applied_serial", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("path", name="pk_applied_files"),
        sa.CheckConstraint(
            "kind IN ('settings', 'teams', 'profile', 'query', 'schedule', 'job', 'asset')",
            name="ck_applied_files_kind",
        ),
    )
    op.create_table(
        "applies",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("serial", sa.Integer, nullable=False),
        sa.Column("commit", _sha(), nullable=False),
        sa.Column("main_tip", _sha(), nullable=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("commit_author", sa.String(512), nullable=True),
        sa.Column("applied_at", _time(), nullable=False),
        sa.Column("summary", _json(), nullable=False),
        sa.Column("plan", _json(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_applies"),
        sa.UniqueConstraint("serial", name="uq_applies_serial"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.String(35), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("previous_run_id", sa.String(35), nullable=True),
        sa.Column("trigger", sa.String(255), nullable=False),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("commit", _sha(), nullable=False),
        sa.Column("version", _sha(), nullable=True),
        sa.Column("draft_ref", sa.String(255), nullable=True),
        sa.Column("started_on", _time(), nullable=True),
        sa.Column("last_modified_on", _time(), nullable=False),
        sa.Column("completed_on", _time(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("arguments", _json(), nullable=False),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("execution_time", sa.Integer, nullable=True),
        sa.Column("timeout", sa.Integer, nullable=True),
        sa.Column("profile", _json(), nullable=True),
        sa.Column("snapshots", _json(), nullable=True),
        sa.Column("predecessors", _json(), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("log_location", sa.Text, nullable=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("supervisor_pid", sa.Integer, nullable=True),
        sa.Column("created_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_job_id_created_at", "runs", ["job_id", "created_at"])
    op.create_index("ix_runs_state", "runs", ["state"])
    op.create_table(
        "fires",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("schedule_id", sa.String(255), nullable=False),
        sa.Column("scheduled_at", _time(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(255), nullable=True),
        sa.Column("run_id", sa.String(35), nullable=True),
        sa.Column("decided_at", _time(), nullable=False),
        sa.Column("overflow_count", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_fires"),
        sa.UniqueConstraint(
            "job_id", "schedule_id", "scheduled_at", name="uq_fires_job_id_schedule_id_scheduled_at"
        ),
        sa.CheckConstraint("outcome IN ('FIRED', 'SKIPPED', 'MISSED')", name="ck_fires_outcome"),
    )
    op.create_table(
        "bookmarks",
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("value", _json(), nullable=False),
        sa.Column("run_id", sa.String(35), nullable=True),
        sa.Column("committed_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_bookmarks"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", _time(), nullable=False),
        sa.Column("renewed_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("expires_at", _time(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("tokens")
    op.drop_table("leases")
    op.drop_table("bookmarks")
    op.drop_table("fires")
    op.drop_index("ix_runs_state", table_name="runs")
    op.drop_index("ix_runs_job_id_created_at", table_name="runs")
    op.drop_table("runs")
    op.drop_table("applies")
    op.drop_table("applied_files")
    op.drop_table("applied_jobs")
    op.drop_table("state")
