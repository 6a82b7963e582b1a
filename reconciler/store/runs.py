"""Run records and bookmarks in the state store, and the lock that serializes queue decisions.

Invariants:

- A state change is one conditional `UPDATE ... WHERE id = :id AND state IN (:expect)`:
  of two processes making the same transition, exactly one gets the new `Run` and the
  other gets None. A change of `state` is checked against the transition table for
  every expected state before the database is touched.
- `Run` fields map to the `runs` columns of the same name; `state` is stored as its
  string, `predecessors` as a JSON list, `arguments`, `profile`, `snapshots` and
  `details` as JSON, and the `host` column mirrors `details["host"]` (a string or None).
- Listings have a total, documented order: `list_runs` newest first by
  (created_at, id); queue scans (`active`, `waiting`) oldest first by (created_at, id).
- `queue_lock` holds one cross-process lock per store for one transaction (SQLite:
  `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock keyed by the
  schema). Inside it, pass its connection as `conn=`: on SQLite a second connection
  would wait for the lock its own caller holds.
- Every method raises StoreError, naming what it did and the store, when the database
  fails. Writes on SQLite begin with `BEGIN IMMEDIATE`, so a read-then-write never
  fails on a stale snapshot.

Does not decide which run starts, nor read the clock: callers pass every time in.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from reconciler.errors import StoreError
from reconciler.ids import CommitSha, JobId, RunId
from reconciler.runs.record import Run
from reconciler.runs.state import TERMINAL, RunState, transition
from reconciler.store import bookmarks as bookmark_rows
from reconciler.store.bookmarks import Bookmark
from reconciler.store.engine import (
    SQLITE_BEGIN_IMMEDIATE,
    SQLITE_LOCK_TIMEOUT,
    in_transaction,
    redact_url,
    translate_errors,
)
from reconciler.store.store import Store
from reconciler.store.tables import UTCDateTime, runs

NOT_TERMINAL = (RunState.WAITING, RunState.STARTING, RunState.RUNNING, RunState.STOPPING)
"""States of a run that has not finished, in lifecycle order."""

HOLDS_SLOT = (RunState.STARTING, RunState.RUNNING, RunState.STOPPING)
"""States of a run that holds a concurrency slot (`RunState.is_active`)."""

DEFAULT_QUEUE_LOCK_TIMEOUT = 30.0
"""Seconds `queue_lock` waits for another holder unless told otherwise."""

_PG_QUEUE_LOCK_CLASS = 0x71756575  # "queu": first key of the advisory lock; second: the schema
_PG_LOCK_NOT_AVAILABLE = "55P03"
_UPDATABLE = frozenset(f.name for f in dataclasses.fields(Run)) - {"id"}
_JSON_FIELDS = frozenset({"arguments", "profile", "snapshots", "details"})
_HOST_KEY = "host"
_IDS_PER_QUERY = 500  # bound parameters per IN list: well under SQLite's limit


class RunStore:
    """The runs and bookmarks of one state store.

    Build it from an open `Store`; it shares the Store's engine (closing the Store
    closes it). Every method takes an optional `conn` (from `queue_lock`) to run inside
    that transaction instead of its own.
    """

    def __init__(self, store: Store) -> None:
        self._engine: Engine = store.engine

    # --- runs -------------------------------------------------------------------------

    def insert(self, run: Run, *, conn: Connection | None = None) -> None:
        """Record a new run. Raises StoreError when its id exists or the database fails."""
        self.insert_many([run], conn=conn)

    def insert_many(self, new: Sequence[Run], *, conn: Connection | None = None) -> None:
        """Record new runs in one statement (executemany). Raises StoreError when an id
        exists or the database fails; then none of them is recorded."""
        if not new:
            return
        names = [f.name for f in dataclasses.fields(Run)]
        rows = [_column_values({n: getattr(run, n) for n in names}) for run in new]
        what = f"inserting run {new[0].id}" if len(new) == 1 else f"inserting {len(new)} runs"
        with self._transaction(what, conn, write=True) as c:
            c.execute(insert(runs), rows)

    def get(self, run_id: RunId, *, conn: Connection | None = None) -> Run | None:
        """Return the run `run_id`, or None when there is none."""
        with self._transaction(f"reading run {run_id}", conn) as c:
            row = c.execute(select(runs).where(runs.c.id == run_id)).first()
        return None if row is None else _run_of(row)

    def update(
        self,
        run_id: RunId,
        *,
        expect: RunState | Collection[RunState],
        changes: Mapping[str, Any],
        conn: Connection | None = None,
    ) -> Run | None:
        """Apply `changes` (Run field names) to `run_id` if its state is in `expect`.

        Returns the changed Run, or None when the run is missing or its state is not in
        `expect` (another process moved it first). Raises IllegalTransition, before
        writing, when `changes["state"]` is not reachable from every expected state;
        ValueError for no changes, an unknown field or an empty `expect`; StoreError when the
        database fails.
        """
        expected = _states(expect)
        if not changes:
            raise ValueError(f"run {run_id}: no changes given")
        unknown = sorted(set(changes) - _UPDATABLE)
        if unknown:
            raise ValueError(f"run {run_id}: cannot change {', '.join(unknown)}")
        if "state" in changes:
            target = RunState(changes["state"])
            for state in expected:
                transition(run_id, state, target)
        statement = (
            update(runs)
            .where(runs.c.id == run_id, runs.c.state.in_([s.value for s in expected]))
            .values(**_column_values(changes))
            .returning(*runs.c)
        )
        what = f"updating run {run_id} from {'/'.join(expected)}"
        with self._transaction(what, conn, write=True) as c:
            row = c.execute(statement).first()
        return None if row is None else _run_of(row)

    def list_runs(
        self,
        job_ids: Collection[JobId],
        *,
        states: Collection[RunState] | None = None,
        include_drafts: bool = False,
        max_results: int = 100,
        next_token: str | None = None,
        conn: Connection | None = None,
    ) -> tuple[list[Run], str | None]:
        """Return one page of the runs of `job_ids`, newest first by (created_at, id).

        The second item is the token of the next page, or None on the last one. Draft
        runs are left out unless `include_drafts`; `states` keeps only those states.
        Raises StoreError("invalid next token") for a token this store did not make,
        ValueError when `max_results` is below 1.
        """
        if max_results < 1:
            raise ValueError(f"max_results must be at least 1, not {max_results}")
        after = None if next_token is None else _decode_token(next_token)
        if not job_ids or (states is not None and not states):
            return [], None
        query = select(runs).where(runs.c.job_id.in_(sorted(set(job_ids))))
        if states is not None:
            query = query.where(runs.c.state.in_(sorted({RunState(s).value for s in states})))
        if not include_drafts:
            query = query.where(runs.c.draft_ref.is_(None))
        if after is not None:
            query = query.where(_before(*after))
        query = query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(max_results + 1)
        with self._transaction("listing runs", conn) as c:
            page = [_run_of(row) for row in c.execute(query)]
        if len(page) <= max_results:
            return page, None
        page = page[:max_results]
        return page, _encode_token(page[-1].created_at, page[-1].id)

    def active(self, *, host: str | None = None, conn: Connection | None = None) -> list[Run]:
        """Return the unfinished runs (on `host`, when given), oldest first by (created_at, id)."""
        query = _oldest_first(runs.c.state.in_([s.value for s in NOT_TERMINAL]))
        if host is not None:
            query = query.where(runs.c.host == host)
        with self._transaction("listing active runs", conn) as c:
            return [_run_of(row) for row in c.execute(query)]

    def holding_slot(self, *, conn: Connection | None = None) -> list[Run]:
        """Return the runs that hold a slot (STARTING/RUNNING/STOPPING), oldest first by
        (created_at, id)."""
        query = _oldest_first(runs.c.state.in_([s.value for s in HOLDS_SLOT]))
        with self._transaction("listing runs holding a slot", conn) as c:
            return [_run_of(row) for row in c.execute(query)]

    def waiting_ids(self, *, conn: Connection | None = None) -> list[RunId]:
        """Return the ids of the WAITING runs in queue order (as `waiting`)."""
        query = (
            select(runs.c.id)
            .where(runs.c.state == RunState.WAITING.value)
            .order_by(runs.c.created_at, runs.c.id)
        )
        with self._transaction("listing waiting runs", conn) as c:
            return [RunId(run_id) for run_id in c.execute(query).scalars()]

    def get_many(self, run_ids: Collection[RunId], *, conn: Connection | None = None) -> list[Run]:
        """Return the runs among `run_ids` that exist, in no particular order."""
        wanted = sorted(set(run_ids))
        found: list[Run] = []
        with self._transaction(f"reading {len(wanted)} runs", conn) as c:
            for at in range(0, len(wanted), _IDS_PER_QUERY):
                chunk = wanted[at : at + _IDS_PER_QUERY]
                found += [
                    _run_of(row) for row in c.execute(select(runs).where(runs.c.id.in_(chunk)))
                ]
        return found

    def waiting(self, *, conn: Connection | None = None) -> list[Run]:
        """Return the WAITING runs, oldest first by (created_at, id): the queue order."""
        query = _oldest_first(runs.c.state == RunState.WAITING.value)
        with self._transaction("listing waiting runs", conn) as c:
            return [_run_of(row) for row in c.execute(query)]

    def count_active(self, *, job_id: JobId | None = None, conn: Connection | None = None) -> int:
        """Return how many runs (of `job_id`, when given) hold a slot: STARTING/RUNNING/STOPPING."""
        query = (
            select(func.count())
            .select_from(runs)
            .where(runs.c.state.in_([s.value for s in HOLDS_SLOT]))
        )
        if job_id is not None:
            query = query.where(runs.c.job_id == job_id)
        with self._transaction("counting active runs", conn) as c:
            return int(c.execute(query).scalar_one())

    def delete_finished_before(
        self, cutoff: datetime, *, conn: Connection | None = None
    ) -> list[Run]:
        """Delete the finished runs that completed (else were created) before `cutoff`.

        Returns the deleted runs, oldest first by (created_at, id).
        """
        finished_at = func.coalesce(runs.c.completed_on, runs.c.created_at)
        statement = (
            delete(runs)
            .where(
                runs.c.state.in_(sorted(s.value for s in TERMINAL)),
                finished_at < bindparam("cutoff", cutoff, type_=UTCDateTime),
            )
            .returning(*runs.c)
        )
        what = f"deleting runs finished before {cutoff.isoformat()}"
        with self._transaction(what, conn, write=True) as c:
            deleted = [_run_of(row) for row in c.execute(statement)]
        return sorted(deleted, key=lambda run: (run.created_at, run.id))

    def job_ids_with_runs(self, *, conn: Connection | None = None) -> list[JobId]:
        """Return the ids of the jobs that have at least one run, in code point order."""
        with self._transaction("listing jobs with runs", conn) as c:
            ids = c.execute(select(runs.c.job_id).distinct()).scalars()
            return sorted(JobId(job_id) for job_id in ids)

    # --- the queue lock ----------------------------------------------------------------

    @contextmanager
    def queue_lock(self, *, timeout: float = DEFAULT_QUEUE_LOCK_TIMEOUT) -> Iterator[Connection]:
        """Hold the store's queue lock for one transaction; yield its connection.

        Queue decisions (count slots, claim WAITING runs) made through this connection
        never interleave with another holder's, in any process. Commits on a clean exit,
        rolls back otherwise. Raises StoreError when another holder keeps the lock
        longer than `timeout` seconds, or when the database fails.
        """
        url = self._engine.url
        with translate_errors("taking the queue lock", url):
            conn = self._engine.connect()
        try:
            _take_queue_lock(conn, timeout)
            try:
                yield conn
            except BaseException:
                with translate_errors("rolling back under the queue lock", url):
                    conn.rollback()
                raise
            with translate_errors("committing under the queue lock", url):
                conn.commit()
        finally:
            conn.close()

    # --- bookmarks ---------------------------------------------------------------------

    def get_bookmark(self, job_id: JobId, *, conn: Connection | None = None) -> Bookmark | None:
        """Return the bookmark of `job_id`, or None when it has none."""
        with self._transaction(f"reading the bookmark of {job_id}", conn) as c:
            return bookmark_rows.load_bookmark(c, job_id)

    def commit_bookmark(
        self,
        job_id: JobId,
        value: Any,
        *,
        run_id: RunId | None,
        at: datetime,
        conn: Connection | None = None,
    ) -> Bookmark:
        """Make `value` (JSON) the bookmark of `job_id`; the replaced one becomes `previous`."""
        with self._transaction(f"committing the bookmark of {job_id}", conn, write=True) as c:
            return bookmark_rows.write_bookmark(c, job_id, value, run_id=run_id, at=at)

    def reset_bookmark(
        self,
        job_id: JobId,
        *,
        run_id: RunId | None = None,
        at: datetime,
        conn: Connection | None = None,
    ) -> Bookmark | None:
        """Reset the bookmark of `job_id`; return the bookmark in effect afterwards.

        Without `run_id` the bookmark is forgotten (the next run starts from nothing)
        and None is returned. With `run_id` it is set back, at `at`, to the value that
        run committed: from the run's `details["bookmark"]["committed"]`, else from the
        bookmark's value or `previous` when that run wrote them. Raises StoreError
        naming the run when it is a run of another job or committed no bookmark.
        """
        what = f"resetting the bookmark of {job_id}"
        with self._transaction(what, conn, write=True) as c:
            if run_id is None:
                bookmark_rows.delete_bookmark(c, job_id)
                return None
            current = bookmark_rows.load_bookmark(c, job_id, for_update=True)
            row = c.execute(
                select(runs.c.job_id, runs.c.details).where(runs.c.id == run_id)
            ).first()
            if row is not None and row.job_id != job_id:
                raise StoreError(f"run {run_id} is a run of {row.job_id}, not of {job_id}")
            found, value = bookmark_rows.committed_value(
                run_id, None if row is None else row.details, current
            )
            if not found:
                raise StoreError(f"run {run_id} committed no bookmark for {job_id}")
            return bookmark_rows.write_bookmark(c, job_id, value, run_id=run_id, at=at)

    def list_bookmarks(self, *, conn: Connection | None = None) -> list[Bookmark]:
        """Return every bookmark, by job id in code point order."""
        with self._transaction("listing bookmarks", conn) as c:
            return bookmark_rows.load_bookmarks(c)

    # --- plumbing ----------------------------------------------------------------------

    def _transaction(
        self, what: str, conn: Connection | None, *, write: bool = False
    ) -> AbstractContextManager[Connection]:
        return in_transaction(self._engine, what, conn, write=write)


def _take_queue_lock(conn: Connection, timeout: float) -> None:
    """Begin `conn`'s transaction holding the queue lock; StoreError after `timeout` s."""
    url = conn.engine.url
    try:
        if conn.dialect.name == "postgresql":
            conn.begin()
            # lock_timeout 0 means "wait forever" to PostgreSQL; the least wait it knows is 1 ms.
            conn.execute(
                text("SELECT set_config('lock_timeout', :ms, true)"),
                {"ms": f"{max(int(timeout * 1000), 1)}ms"},
            )
            conn.execute(
                text(
                    "SELECT pg_advisory_xact_lock(CAST(:key AS integer),"
                    " hashtext(coalesce(current_schema(), '')))"
                ),
                {"key": _PG_QUEUE_LOCK_CLASS},
            )
            conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
        else:
            conn.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True, SQLITE_LOCK_TIMEOUT: timeout})
            conn.begin()
    except DBAPIError as exc:
        conn.rollback()
        orig = exc.orig
        timed_out = getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE or (
            conn.dialect.name == "sqlite" and ("locked" in str(orig) or "busy" in str(orig))
        )
        if timed_out:
            raise StoreError(
                f"another process holds the run queue lock; gave up after {timeout:g} s"
            ) from exc
        raise StoreError(f"state store {redact_url(url)}: taking the queue lock: {orig}") from exc
    except SQLAlchemyError as exc:
        conn.rollback()
        raise StoreError(f"state store {redact_url(url)}: taking the queue lock: {exc}") from exc


def _states(expect: RunState | Collection[RunState]) -> list[RunState]:
    states = [expect] if isinstance(expect, RunState) else sorted({RunState(s) for s in expect})
    if not states:
        raise ValueError("expect names no state")
    return states


def _oldest_first(condition: ColumnElement[bool]) -> Select[Any]:
    return select(runs).where(condition).order_by(runs.c.created_at, runs.c.id)


def _before(created_at: datetime, run_id: str) -> ColumnElement[bool]:
    """Rows after (created_at, run_id) in newest-first order."""
    at = bindparam("after_created_at", created_at, type_=UTCDateTime)
    return or_(runs.c.created_at < at, and_(runs.c.created_at == at, runs.c.id < run_id))


def _encode_token(created_at: datetime, run_id: str) -> str:
    payload = json.dumps({"created_at": created_at.isoformat(), "id": run_id}, sort_keys=True)
    return base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii")


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        created_at = datetime.fromisoformat(payload["created_at"])
        run_id = payload["id"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeError) as exc:
        raise StoreError("invalid next token") from exc
    if not isinstance(run_id, str) or created_at.utcoffset() is None:
        raise StoreError("invalid next token")
    return created_at, run_id


def _column_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The `runs` column values of the Run fields in `fields`."""
    values: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "state":
            values[name] = RunState(value).value
        elif name == "predecessors":
            values[name] = [_plain(p) for p in value]
        elif name in _JSON_FIELDS:
            values[name] = None if value is None else _plain(value)
        else:
            values[name] = value
    if "details" in fields:
        host = (fields["details"] or {}).get(_HOST_KEY)
        values["host"] = host if isinstance(host, str) else None
    return values


def _plain(value: Any) -> Any:
    """`value` with every Mapping made a dict and every tuple a list, for the JSON encoder."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _run_of(row: Row[Any]) -> Run:
    return Run(
        id=RunId(row.id),
        job_id=JobId(row.job_id),
        attempt=row.attempt,
        previous_run_id=None if row.previous_run_id is None else RunId(row.previous_run_id),
        trigger=row.trigger,
        commit=CommitSha(row.commit),
        version=None if row.version is None else CommitSha(row.version),
        draft_ref=row.draft_ref,
        state=RunState(row.state),
        created_at=row.created_at,
        last_modified_on=row.last_modified_on,
        started_on=row.started_on,
        completed_on=row.completed_on,
        arguments=row.arguments,
        error_message=row.error_message,
        execution_time=row.execution_time,
        timeout=row.timeout,
        profile=row.profile,
        snapshots=row.snapshots,
        predecessors=tuple(row.predecessors or ()),
        exit_code=row.exit_code,
        log_location=row.log_location,
        target=row.target,
        supervisor_pid=row.supervisor_pid,
        details=row.details,
    )
