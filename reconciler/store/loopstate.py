"""The loop's small named values: last synced commit and time, last sync error, drift.

Invariants:

- One `loop_state` row per key (at most 64 characters), holding a JSON value and when
  it was last set (the caller's `now`). Values are JSON as they are: a datetime is
  stored as its ISO-8601 string by whoever sets it; None is stored as JSON null and
  read back as None (that is how a cleared `lastSyncError` reads).
- `set_values` writes all its keys in one bulk upsert; keys it does not name keep
  their values.
- Every method raises StoreError, naming what it did and the store, when the database
  fails, and takes an optional `conn` to run inside the caller's transaction (e.g. a
  `LeaseStore.leader_transaction`) instead of its own.

Does not read the clock.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.store.engine import in_transaction
from reconciler.store.store import Store
from reconciler.store.tables import loop_state

LAST_SYNCED_COMMIT = "lastSyncedCommit"
"""The commit the loop last applied (or found already applied), a 40-hex SHA."""

LAST_SYNCED_AT = "lastSyncedAt"
"""When the loop last synced, ISO-8601 UTC."""

LAST_SYNC_ERROR = "lastSyncError"
"""`{"commit", "message", "at"}` of the last failed sync, or None after a good one."""

DRIFT = "drift"
"""What the last drift check found (see `reconciler drift`)."""

MAX_KEY_LENGTH = 64


class LoopStateStore:
    """The loop state of one state store. Shares the Store's engine (closing it closes this)."""

    def __init__(self, store: Store) -> None:
        self._engine: Engine = store.engine

    def get_all(self, *, conn: Connection | None = None) -> dict[str, Any]:
        """Return every stored value, by key in code point order."""
        query = select(loop_state.c.key, loop_state.c.value).order_by(loop_state.c.key)
        with self._transaction("reading the loop state", conn) as c:
            return {row.key: row.value for row in c.execute(query)}

    def set_values(
        self, values: Mapping[str, Any], *, now: datetime, conn: Connection | None = None
    ) -> None:
        """Insert or replace the values of the keys in `values`, stamped `now`.

        Raises ValueError, before writing, for a key longer than 64 characters, a value
        that is not JSON, or a naive `now`; StoreError when the database fails.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"naive datetime {now.isoformat()} given; the store takes aware UTC")
        if not values:
            return
        for key, value in values.items():
            if not key or len(key) > MAX_KEY_LENGTH:
                raise ValueError(f"loop state key {key!r}: must be 1-{MAX_KEY_LENGTH} characters")
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"loop state {key}: not a JSON value: {exc}") from exc
        rows = [
            {"key": key, "value": value, "updated_at": now.astimezone(UTC)}
            for key, value in sorted(values.items())
        ]
        what = f"setting loop state {', '.join(row['key'] for row in rows)}"
        with self._transaction(what, conn, write=True) as c:
            upsert = (
                postgresql.insert(loop_state)
                if c.dialect.name == "postgresql"
                else sqlite.insert(loop_state)
            )
            c.execute(
                upsert.on_conflict_do_update(
                    index_elements=["key"],
                    set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
                ),
                rows,
            )

    def _transaction(
        self, what: str, conn: Connection | None, *, write: bool = False
    ) -> AbstractContextManager[Connection]:
        return in_transaction(self._engine, what, conn, write=write)
