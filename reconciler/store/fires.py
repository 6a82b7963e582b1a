"""The fire ledger and the schedule cursors: what the loop decided for each scheduled time.

Invariants:

- The ledger has one row per decided (job, schedule, scheduled time): FIRED with its
  run id, SKIPPED with the reason, or MISSED with `deadline` or `superseded` (and, on
  a capped catch-up, `overflow_count` more times it counted but did not write). The
  unique key makes a decision exactly-once: inserting a decided key again raises
  `DuplicateFire` naming it, and nothing of that batch is kept (the batch runs in a
  savepoint, so a caller's transaction stays usable).
- Listings have a total, documented order: by (scheduled_at, job_id, schedule_id).
- A cursor is, per (job, schedule), the scheduled time decided up to and the hash of
  the schedule definition it was decided under; the loop writes ledger rows and
  cursors in one transaction (pass its `conn`).
- Every method raises StoreError, naming what it did and the store, when the database
  fails, and takes an optional `conn` to run inside the caller's transaction (e.g. a
  `LeaseStore.leader_transaction`) instead of its own.

Does not decide what is due (see `reconciler.schedule`) nor read the clock: callers
pass every time in.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

from sqlalchemy import Connection, Engine, Row, Table, bindparam, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from reconciler.errors import StoreError
from reconciler.ids import JobId, RunId, ScheduleId
from reconciler.store.engine import in_transaction
from reconciler.store.store import Store
from reconciler.store.tables import FIRE_OUTCOMES, UTCDateTime, fires, schedule_cursors

FireOutcome = Literal["FIRED", "SKIPPED", "MISSED"]
"""The decisions the ledger records (`tables.FIRE_OUTCOMES`)."""

ScheduleKey = tuple[JobId, ScheduleId]
"""A schedule's key: (job id, schedule id)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fire:
    """One ledger row: what the loop decided for `job_id`/`schedule_id` at `scheduled_at`.

    `reason` is None for FIRED, else e.g. `deadline`, `superseded` or
    `FORBID: run jr_… is RUNNING` (at most 255 characters). `lateness_ms` is when the
    decision was committed minus `scheduled_at`, for metrics.
    """

    job_id: JobId
    schedule_id: ScheduleId
    scheduled_at: datetime
    outcome: FireOutcome
    reason: str | None
    run_id: RunId | None
    decided_at: datetime
    overflow_count: int = 0
    lateness_ms: int | None = None

    @property
    def key(self) -> tuple[JobId, ScheduleId, datetime]:
        """The ledger's unique key of this row."""
        return (self.job_id, self.schedule_id, self.scheduled_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class Cursor:
    """Where a schedule's decisions stand: decided up to `cursor_at`, under `definition_hash`."""

    cursor_at: datetime
    definition_hash: str


class CursorValue(Protocol):
    """What `write_cursors` reads from a cursor: `Cursor`, or the loop's own cursor type."""

    @property
    def cursor_at(self) -> datetime: ...

    @property
    def definition_hash(self) -> str: ...


class DuplicateFire(StoreError):
    """The ledger already holds a decision for this (job, schedule, scheduled time)."""

    def __init__(self, job_id: str, schedule_id: str, scheduled_at: datetime) -> None:
        self.job_id = job_id
        self.schedule_id = schedule_id
        self.scheduled_at = scheduled_at
        super().__init__(
            f"fire ledger: {job_id} schedule {schedule_id} at "
            f"{scheduled_at.astimezone(UTC).isoformat()} is already decided"
        )


class FireStore:
    """The fire ledger and schedule cursors of one state store.

    Shares the Store's engine (closing the Store closes it).
    """

    def __init__(self, store: Store) -> None:
        self._engine: Engine = store.engine

    # --- the ledger -------------------------------------------------------------------

    def insert(self, rows: Sequence[Fire], *, conn: Connection | None = None) -> None:
        """Record `rows` in one bulk statement, all or none.

        Raises DuplicateFire naming the first (in ledger order) key that is already
        decided or appears twice in `rows`; ValueError for an unknown outcome, a
        negative `overflow_count` or a naive time; StoreError when the database fails.
        """
        if not rows:
            return
        _check_batch(rows)
        values = [_row_values(fire) for fire in rows]
        with self._transaction(f"recording {len(rows)} fire(s)", conn, write=True) as c:
            try:
                with c.begin_nested():
                    c.execute(insert(fires), values)
            except IntegrityError as exc:
                taken = _decided_keys(c, rows)
                if not taken:
                    raise
                raise DuplicateFire(*taken[0]) from exc

    def list(
        self,
        *,
        job_id: JobId | None = None,
        schedule_id: ScheduleId | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        outcome: FireOutcome | Collection[FireOutcome] | None = None,
        limit: int | None = None,
        conn: Connection | None = None,
    ) -> builtins.list[Fire]:
        """Return ledger rows by (scheduled_at, job_id, schedule_id), the first `limit` of them.

        Filters: `job_id`, `schedule_id`, `since <= scheduled_at < until`, `outcome`
        (one or several). Raises ValueError when `limit` is below 1.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(fires)
        if job_id is not None:
            query = query.where(fires.c.job_id == job_id)
        if schedule_id is not None:
            query = query.where(fires.c.schedule_id == schedule_id)
        if since is not None:
            query = query.where(fires.c.scheduled_at >= _time("since", since))
        if until is not None:
            query = query.where(fires.c.scheduled_at < _time("until", until))
        if outcome is not None:
            wanted = [outcome] if isinstance(outcome, str) else sorted(outcome)
            query = query.where(fires.c.outcome.in_(wanted))
        query = query.order_by(fires.c.scheduled_at, fires.c.job_id, fires.c.schedule_id)
        if limit is not None:
            query = query.limit(limit)
        with self._transaction("listing fires", conn) as c:
            return [_fire_of(row) for row in c.execute(query)]

    def counts_by_outcome(
        self,
        since: datetime | None = None,
        *,
        include_overflow: bool = False,
        conn: Connection | None = None,
    ) -> dict[str, int]:
        """Return the number of ledger rows per outcome (every outcome, 0 when none).

        Only rows with `scheduled_at >= since`, when given. With `include_overflow`
        scheduled times are counted instead of rows: a row adds 1 + its `overflow_count`.
        """
        counted = (
            func.sum(1 + fires.c.overflow_count) if include_overflow else func.count(fires.c.id)
        )
        query = select(fires.c.outcome, counted).group_by(fires.c.outcome)
        if since is not None:
            query = query.where(fires.c.scheduled_at >= _time("since", since))
        counts = dict.fromkeys(FIRE_OUTCOMES, 0)
        with self._transaction("counting fires", conn) as c:
            for outcome, count in c.execute(query):
                counts[outcome] = int(count or 0)
        return counts

    def last_decided(self, *, conn: Connection | None = None) -> dict[ScheduleKey, datetime]:
        """Return, per (job, schedule) with ledger rows, its latest decided scheduled time."""
        query = select(
            fires.c.job_id, fires.c.schedule_id, func.max(fires.c.scheduled_at)
        ).group_by(fires.c.job_id, fires.c.schedule_id)
        with self._transaction("reading the last decided fires", conn) as c:
            return {
                (JobId(job_id), ScheduleId(schedule_id)): last
                for job_id, schedule_id, last in c.execute(query)
            }

    # --- cursors ----------------------------------------------------------------------

    def read_cursors(self, *, conn: Connection | None = None) -> dict[ScheduleKey, Cursor]:
        """Return every schedule cursor, by (job id, schedule id)."""
        query = select(schedule_cursors).order_by(
            schedule_cursors.c.job_id, schedule_cursors.c.schedule_id
        )
        with self._transaction("reading schedule cursors", conn) as c:
            return {
                (JobId(row.job_id), ScheduleId(row.schedule_id)): Cursor(
                    cursor_at=row.cursor_at, definition_hash=row.definition_hash
                )
                for row in c.execute(query)
            }

    def write_cursors(
        self,
        rows: Mapping[ScheduleKey, CursorValue],
        *,
        now: datetime,
        conn: Connection | None = None,
    ) -> None:
        """Insert or replace the cursors in `rows` in one bulk statement, stamped `now`."""
        if not rows:
            return
        values = [
            {
                "job_id": job_id,
                "schedule_id": schedule_id,
                "cursor_at": _time("cursor_at", cursor.cursor_at),
                "definition_hash": cursor.definition_hash,
                "updated_at": _time("now", now),
            }
            for (job_id, schedule_id), cursor in sorted(rows.items())
        ]
        with self._transaction(f"writing {len(values)} schedule cursor(s)", conn, write=True) as c:
            upsert = _insert_for(c, schedule_cursors)
            statement = upsert.on_conflict_do_update(
                index_elements=["job_id", "schedule_id"],
                set_={
                    "cursor_at": upsert.excluded.cursor_at,
                    "definition_hash": upsert.excluded.definition_hash,
                    "updated_at": upsert.excluded.updated_at,
                },
            )
            c.execute(statement, values)

    def delete_cursors(
        self, keys: Collection[ScheduleKey], *, conn: Connection | None = None
    ) -> None:
        """Delete the cursors of `keys`; keys without a cursor are ignored."""
        if not keys:
            return
        statement = delete(schedule_cursors).where(
            schedule_cursors.c.job_id == bindparam("k_job_id"),
            schedule_cursors.c.schedule_id == bindparam("k_schedule_id"),
        )
        params = [{"k_job_id": job, "k_schedule_id": schedule} for job, schedule in sorted(keys)]
        with self._transaction(f"deleting {len(params)} schedule cursor(s)", conn, write=True) as c:
            c.execute(statement, params)

    # --- plumbing ---------------------------------------------------------------------

    def _transaction(
        self, what: str, conn: Connection | None, *, write: bool = False
    ) -> AbstractContextManager[Connection]:
        return in_transaction(self._engine, what, conn, write=write)


def _check_batch(rows: Sequence[Fire]) -> None:
    """Raise ValueError for an invalid row, DuplicateFire for a key given twice."""
    seen: set[tuple[str, str, datetime]] = set()
    twice: list[tuple[str, str, datetime]] = []
    for fire in rows:
        if fire.outcome not in FIRE_OUTCOMES:
            raise ValueError(f"fire {fire.key}: unknown outcome {fire.outcome!r}")
        if fire.overflow_count < 0:
            raise ValueError(f"fire {fire.key}: negative overflow_count {fire.overflow_count}")
        key = (fire.job_id, fire.schedule_id, _time("scheduled_at", fire.scheduled_at))
        _time("decided_at", fire.decided_at)
        if key in seen:
            twice.append(key)
        seen.add(key)
    if twice:
        raise DuplicateFire(*min(twice, key=_ledger_order))


def _decided_keys(conn: Connection, rows: Sequence[Fire]) -> list[tuple[str, str, datetime]]:
    """The keys of `rows` the ledger already holds, in ledger order."""
    wanted = {(f.job_id, f.schedule_id, f.scheduled_at.astimezone(UTC)) for f in rows}
    query = select(fires.c.job_id, fires.c.schedule_id, fires.c.scheduled_at).where(
        fires.c.job_id.in_(sorted({f.job_id for f in rows})),
        fires.c.schedule_id.in_(sorted({f.schedule_id for f in rows})),
        fires.c.scheduled_at.in_(
            bindparam("times", sorted(k[2] for k in wanted), expanding=True, type_=UTCDateTime)
        ),
    )
    found = [(j, s, t) for j, s, t in conn.execute(query) if (j, s, t) in wanted]
    return sorted(found, key=_ledger_order)


def _ledger_order(key: tuple[str, str, datetime]) -> tuple[datetime, str, str]:
    job_id, schedule_id, scheduled_at = key
    return (scheduled_at, job_id, schedule_id)


def _time(name: str, value: datetime) -> datetime:
    """`value` in UTC; ValueError naming `name` when it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: naive datetime {value.isoformat()} given; the store takes UTC")
    return value.astimezone(UTC)


def _row_values(fire: Fire) -> dict[str, Any]:
    return {
        "job_id": fire.job_id,
        "schedule_id": fire.schedule_id,
        "scheduled_at": fire.scheduled_at,
        "outcome": fire.outcome,
        "reason": fire.reason,
        "run_id": fire.run_id,
        "decided_at": fire.decided_at,
        "overflow_count": fire.overflow_count,
        "lateness_ms": fire.lateness_ms,
    }


def _fire_of(row: Row[Any]) -> Fire:
    return Fire(
        job_id=JobId(row.job_id),
        schedule_id=ScheduleId(row.schedule_id),
        scheduled_at=row.scheduled_at,
        outcome=cast(FireOutcome, row.outcome),
        reason=row.reason,
        run_id=None if row.run_id is None else RunId(row.run_id),
        decided_at=row.decided_at,
        overflow_count=row.overflow_count,
        lateness_ms=row.lateness_ms,
    )


def _insert_for(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
