"""Run details and host, a queue-scan index on runs, and the replaced value of a bookmark.

Revision ID: 0002
Revises: 0001
Create Date: 2026-01-02

- `runs.details` (JSON, not null, default `{}`): what varies by kind of run; rows from
  0001 get `{}`.
- `runs.host` (nullable): the machine a run's process lives on, for re-attachment.
- `ix_runs_state_created_at` replaces `ix_runs_state`: queue scans filter by state and
  read oldest first, and the old index is a prefix of the new one.
- `bookmarks.previous` (JSON, nullable): the bookmark a commit or reset replaced
  (`{"value", "run_id", "committed_at"}`), so a reset can go back one step.

Spelled out, not imported from `reconciler.store.tables`, so this revision stays what
it was when later revisions change the tables. Only `ADD COLUMN` and index changes:
SQLite does them in place, without a table copy.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column(
        "runs",
        sa.Column("details", _json(), nullable=False, server_default=sa.text("'{}'")),
    )
    op.add_column("runs", sa.Column("host", sa.String(255), nullable=True))
    op.drop_index("ix_runs_state", table_name="runs")
    op.create_index("ix_runs_state_created_at", "runs", ["state", "created_at"])
    op.add_column("bookmarks", sa.Column("previous", _json(), nullable=True))


def downgrade() -> None:
    op.drop_column("bookmarks", "previous")
    op.drop_index("ix_runs_state_created_at", table_name="runs")
    op.create_index("ix_runs_state", "runs", ["state"])
    op.drop_column("runs", "host")
    op.drop_column("runs", "details")
