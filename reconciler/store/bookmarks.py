"""Bookmarks: per job, the value its last run committed, and the one that value replaced.

Invariants:

- One row per job. Committing replaces the value and keeps the replaced bookmark in
  `previous` (one step of history, `{"value", "run_id", "committed_at"}`), so a reset
  to the run before can find its value even when no run record holds it.
- A run that commits records the value in its own `details` under
  `RUN_DETAILS_KEY`/`COMMITTED_KEY` (`run.details["bookmark"]["committed"]`); that is
  where a reset to a run looks first.
- Writers lock the row they change (SQLite: the caller's `BEGIN IMMEDIATE`;
  PostgreSQL: `SELECT ... FOR UPDATE`, or the unique key when inserting), so two
  commits of one job never lose each other's `previous`.

Every function takes an open `Connection` and runs inside the caller's transaction.
Does not wrap errors (callers turn `SQLAlchemyError` into `StoreError` with context);
does not read the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from reconciler.errors import StoreError
from reconciler.ids import JobId, RunId
from reconciler.store.tables import bookmarks

RUN_DETAILS_KEY = "bookmark"
"""The key of `Run.details` under which a run records its bookmark."""

COMMITTED_KEY = "committed"
"""The key, inside `Run.details[RUN_DETAILS_KEY]`, of the value the run committed."""

_WRITE_ATTEMPTS = 3
"""Insert-or-update rounds before giving up (a round is lost only to a concurrent reset)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Bookmark:
    """Where a job's next run resumes: the value `run_id` committed at `committed_at`.

    `previous` is the bookmark this one replaced (without its own `previous`), if any.
    """

    job_id: JobId
    value: Any
    run_id: RunId | None
    committed_at: datetime
    previous: Bookmark | None = None


def load_bookmark(conn: Connection, job_id: JobId, *, for_update: bool = False) -> Bookmark | None:
    """Return the bookmark of `job_id`, or None; lock its row when `for_update` (PostgreSQL)."""
    query = select(bookmarks).where(bookmarks.c.job_id == job_id)
    if for_update:
        query = query.with_for_update()
    row = conn.execute(query).first()
    return None if row is None else _bookmark_of(row)


def load_bookmarks(conn: Connection) -> list[Bookmark]:
    """Return every bookmark, by job id in code point order."""
    rows = conn.execute(select(bookmarks)).all()
    return sorted((_bookmark_of(row) for row in rows), key=lambda b: b.job_id)


def write_bookmark(
    conn: Connection, job_id: JobId, value: Any, *, run_id: RunId | None, at: datetime
) -> Bookmark:
    """Make `value` the bookmark of `job_id`, keeping the replaced one in `previous`."""
    insert = (
        _insert_for(conn)
        .values(job_id=job_id, value=value, run_id=run_id, committed_at=at, previous=None)
        .on_conflict_do_nothing(index_elements=["job_id"])
        # RETURNING, not rowcount: psycopg reports no rowcount for this statement.
        .returning(bookmarks.c.job_id)
    )
    for _ in range(_WRITE_ATTEMPTS):
        if conn.execute(insert).first() is not None:
            return Bookmark(job_id=job_id, value=value, run_id=run_id, committed_at=at)
        current = load_bookmark(conn, job_id, for_update=True)
        if current is None:
            continue  # reset between the insert and the lock: insert again
        conn.execute(
            update(bookmarks)
            .where(bookmarks.c.job_id == job_id)
            .values(value=value, run_id=run_id, committed_at=at, previous=_encode(current))
        )
        return Bookmark(
            job_id=job_id,
            value=value,
            run_id=run_id,
            committed_at=at,
            previous=_without_previous(current),
        )
    raise StoreError(f"bookmark of {job_id}: changed concurrently {_WRITE_ATTEMPTS} times")


def delete_bookmark(conn: Connection, job_id: JobId) -> Bookmark | None:
    """Forget the bookmark of `job_id`; return the one deleted, or None."""
    row = conn.execute(
        delete(bookmarks).where(bookmarks.c.job_id == job_id).returning(*bookmarks.c)
    ).first()
    return None if row is None else _bookmark_of(row)


def committed_value(
    run_id: RunId, details: Mapping[str, Any] | None, current: Bookmark | None
) -> tuple[bool, Any]:
    """Return (found, value): what `run_id` committed, by its `details`, else by history.

    `details` are the run's details (None when the run record is gone); `current` is
    the job's bookmark row, whose value or `previous` may be the run's.
    """
    if details is not None:
        recorded = details.get(RUN_DETAILS_KEY)
        if isinstance(recorded, Mapping) and COMMITTED_KEY in recorded:
            return True, recorded[COMMITTED_KEY]
    for candidate in (current, None if current is None else current.previous):
        if candidate is not None and candidate.run_id == run_id:
            return True, candidate.value
    return False, None


def _bookmark_of(row: Row[Any]) -> Bookmark:
    previous = row.previous
    return Bookmark(
        job_id=JobId(row.job_id),
        value=row.value,
        run_id=None if row.run_id is None else RunId(row.run_id),
        committed_at=row.committed_at,
        previous=None if previous is None else _decode(JobId(row.job_id), previous),
    )


def _encode(bookmark: Bookmark) -> dict[str, Any]:
    return {
        "value": bookmark.value,
        "run_id": bookmark.run_id,
        "committed_at": bookmark.committed_at.isoformat(),
    }


def _decode(job_id: JobId, stored: Mapping[str, Any]) -> Bookmark:
    run_id = stored.get("run_id")
    return Bookmark(
        job_id=job_id,
        value=stored.get("value"),
        run_id=None if run_id is None else RunId(run_id),
        committed_at=datetime.fromisoformat(stored["committed_at"]),
    )


def _without_previous(bookmark: Bookmark) -> Bookmark:
    return Bookmark(
        job_id=bookmark.job_id,
        value=bookmark.value,
        run_id=bookmark.run_id,
        committed_at=bookmark.committed_at,
    )


def _insert_for(conn: Connection) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(bookmarks)
    return sqlite.insert(bookmarks)
