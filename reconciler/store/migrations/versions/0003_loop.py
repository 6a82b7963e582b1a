"""What the loop (`reconciler serve`) keeps: schedule cursors, loop state, the leader's identity.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-03

- `schedule_cursors`: per (job, schedule), the scheduled time the loop has decided up
  to (`cursor_at`) and the hash of the schedule definition it was decided under, so a
  changed or re-enabled schedule starts afresh instead of catching up.
- `loop_state`: small named JSON values of the loop (`lastSyncedCommit`,
  `lastSyncedAt`, `lastSyncError`, `drift`), one row per key.
- `leases.replica` and `leases.pid` (nullable): which replica and process hold the
  lease, for `status`.
- `fires.lateness_ms` (nullable): when the decision was committed minus the scheduled
  time, for metrics; `ix_fires_scheduled_at` serves time-window scans of the ledger
  (the unique key (job_id, schedule_id, scheduled_at) from 0001 serves per-schedule ones).

Spelled out, not imported from `reconciler.store.tables`, so this revision stays what
it was when later revisions change the tables. Only `CREATE TABLE`, `ADD COLUMN` and
`CREATE INDEX`: SQLite does them in place, without a table copy, and rows are kept.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedule_cursors",
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("schedule_id", sa.String(255), nullable=False),
        sa.Column("cursor_at", _time(), nullable=False),
        sa.Column("definition_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "schedule_id", name="pk_schedule_cursors"),
    )
    op.create_table(
        "loop_state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", _json(), nullable=False),
        sa.Column("updated_at", _time(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_loop_state"),
    )
    op.add_column("leases", sa.Column("replica", sa.String(255), nullable=True))
    op.add_column("leases", sa.Column("pid", sa.Integer, nullable=True))
    op.add_column("fires", sa.Column("lateness_ms", sa.Integer, nullable=True))
    op.create_index("ix_fires_scheduled_at", "fires", ["scheduled_at"])


def downgrade() -> None:
    op.drop_index("ix_fires_scheduled_at", table_name="fires")
    op.drop_column("fires", "lateness_ms")
    op.drop_column("leases", "pid")
    op.drop_column("leases", "replica")
    op.drop_table("loop_state")
    op.drop_table("schedule_cursors")
