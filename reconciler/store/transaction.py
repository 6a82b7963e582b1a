"""The apply transaction: one database transaction that holds the state lock while it lasts.

Invariants:

- The transaction *is* the lock, so a holder that dies releases it at once (process
  death ends the SQLite write lock and the PostgreSQL session). SQLite takes it with
  `BEGIN IMMEDIATE` (busy timeout = the lock timeout); PostgreSQL with
  `SELECT ... FROM state WHERE id = 1 FOR UPDATE` under `SET LOCAL lock_timeout`,
  inserting the state row first when it is missing (race-safe). Two apply
  transactions never interleave.
- Everything commits together on a clean exit of the `with` block and nothing is kept
  when it exits with an exception (a SIGTERM'd apply is abandoned, not finished).
- `finish` bumps the serial by exactly one and records the apply and the rows hash.

Does not decide what to apply (see `reconciler.plan`); does not retry.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, RootTransaction, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from reconciler.errors import StoreError
from reconciler.ids import CommitSha, JobId
from reconciler.store import applied
from reconciler.store.engine import (
    SQLITE_BEGIN_IMMEDIATE,
    SQLITE_LOCK_TIMEOUT,
    redact_url,
    translate_errors,
)
from reconciler.store.records import (
    AppliedFile,
    AppliedJob,
    AppliedJobIndex,
    ApplyRecord,
    StoreState,
)
from reconciler.store.tables import STATE_ROW_ID, state

APPLICATION_NAME_PREFIX = "reconciler apply: "
"""PostgreSQL `application_name` of a session holding the state lock, before the holder."""

_PG_LOCK_NOT_AVAILABLE = "55P03"


class ApplyTransaction:
    """Reads and writes of one apply, inside one transaction that holds the state lock.

    Obtain it from `Store.apply_transaction`; it is unusable once that block ends.
    Every method raises StoreError when the database fails.
    """

    def __init__(self, conn: Connection, start: StoreState) -> None:
        self._conn = conn
        self._start = start
        self._record: ApplyRecord | None = None
        self._closed = False

    @property
    def connection(self) -> Connection:
        """The transaction's connection, for checks that must run inside it (fencing)."""
        return self._conn

    @property
    def next_serial(self) -> int:
        """The serial `finish` will record: the serial at lock time plus one."""
        return self._start.serial + 1

    def read_state(self) -> StoreState:
        """Return the state row as this transaction sees it."""
        with self._guard("reading the state"):
            return applied.load_state(self._conn)

    def read_job_index(self, *, include_deleted: bool = False) -> dict[JobId, AppliedJobIndex]:
        """Return the index of applied jobs (deleted ones only if asked), by id."""
        with self._guard("reading the applied job index"):
            return applied.load_job_index(self._conn, include_deleted=include_deleted)

    def read_jobs(
        self, ids: Collection[JobId] | None = None, *, include_deleted: bool = False
    ) -> dict[JobId, AppliedJob]:
        """Return the applied jobs among `ids` (all when None), by id."""
        with self._guard("reading applied jobs"):
            return applied.load_jobs(self._conn, ids, include_deleted=include_deleted)

    def read_files(self, paths: Collection[str] | None = None) -> dict[str, AppliedFile]:
        """Return the applied repo files among `paths` (all when None) that exist, by path."""
        with self._guard("reading applied files"):
            return applied.load_files(self._conn, paths)

    def upsert_jobs(self, jobs: Sequence[AppliedJob]) -> None:
        """Insert or replace `jobs` in one bulk statement."""
        self._check_writable()
        with self._guard(f"writing {len(jobs)} applied job(s)"):
            applied.write_jobs(self._conn, jobs)

    def mark_jobs_deleted(self, ids: Collection[JobId], at: datetime) -> None:
        """Mark the live jobs among `ids` deleted at `at`; their rows and history stay."""
        self._check_writable()
        with self._guard(f"marking {len(ids)} job(s) deleted"):
            applied.write_jobs_deleted(self._conn, ids, at)

    def replace_files(self, upserts: Sequence[AppliedFile], deletes: Collection[str]) -> None:
        """Insert or replace `upserts` and remove `deletes` from the applied file index."""
        self._check_writable()
        with self._guard(f"writing {len(upserts)} and deleting {len(deletes)} applied file(s)"):
            applied.write_files(self._conn, upserts, deletes, serial=self.next_serial)

    def finish(
        self,
        *,
        commit: CommitSha,
        main_tip: CommitSha | None,
        user: str,
        commit_author: str | None,
        at: datetime,
        summary: Mapping[str, Any],
        plan: Mapping[str, Any] | None,
    ) -> ApplyRecord:
        """Record the apply: serial + 1, the applies row, and the state row with its rows hash.

        Call it once, last; it commits when the `with` block exits cleanly.
        """
        self._check_writable()
        with self._guard("recording the apply"):
            self._record = applied.write_apply(
                self._conn,
                serial=self.next_serial,
                commit=commit,
                main_tip=main_tip,
                user=user,
                commit_author=commit_author,
                at=at,
                summary=dict(summary),
                plan=None if plan is None else dict(plan),
            )
        return self._record

    def _check_writable(self) -> None:
        if self._closed:
            raise StoreError("the apply transaction has ended; open a new one")
        if self._record is not None:
            raise StoreError(f"apply {self._record.serial} is already finished; open a new one")

    def _guard(self, what: str) -> AbstractContextManager[None]:
        if self._closed:
            raise StoreError("the apply transaction has ended; open a new one")
        return translate_errors(what, self._conn.engine.url)

    def _close(self) -> None:
        self._closed = True


@contextmanager
def open_apply_transaction(
    engine: Engine, *, holder: str, lock_timeout: float
) -> Iterator[ApplyTransaction]:
    """Hold the state lock for the block; yield the ApplyTransaction of the block.

    Raises StoreError when another apply holds the lock past `lock_timeout` seconds,
    or when the database fails; commits on a clean exit, rolls back otherwise.
    """
    url = engine.url
    try:
        conn = engine.connect()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reach the state store {redact_url(url)}: {exc}") from exc
    try:
        transaction, start = _acquire(conn, holder=holder, lock_timeout=lock_timeout)
        tx = ApplyTransaction(conn, start)
        try:
            yield tx
        except BaseException:
            tx._close()
            with translate_errors("rolling back the apply", url):
                transaction.rollback()
            raise
        tx._close()
        with translate_errors("committing the apply", url):
            transaction.commit()
    finally:
        conn.close()


def _acquire(
    conn: Connection, *, holder: str, lock_timeout: float
) -> tuple[RootTransaction, StoreState]:
    if conn.dialect.name == "postgresql":
        return _acquire_postgresql(conn, holder=holder, lock_timeout=lock_timeout)
    return _acquire_sqlite(conn, lock_timeout=lock_timeout)


def _acquire_sqlite(conn: Connection, *, lock_timeout: float) -> tuple[RootTransaction, StoreState]:
    options = {SQLITE_BEGIN_IMMEDIATE: True, SQLITE_LOCK_TIMEOUT: lock_timeout}
    try:
        transaction = conn.execution_options(**options).begin()
    except DBAPIError as exc:
        if "locked" in str(exc.orig) or "busy" in str(exc.orig):
            raise StoreError(_timeout_message(lock_timeout)) from exc
        raise StoreError(f"state store {redact_url(conn.engine.url)}: {exc.orig}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"state store {redact_url(conn.engine.url)}: {exc}") from exc
    with translate_errors("reading the state", conn.engine.url):
        applied.ensure_state_row(conn)
        return transaction, applied.load_state(conn)


def _acquire_postgresql(
    conn: Connection, *, holder: str, lock_timeout: float
) -> tuple[RootTransaction, StoreState]:
    url = conn.engine.url
    lock_query = select(state.c.serial).where(state.c.id == STATE_ROW_ID).with_for_update()
    # lock_timeout 0 means "wait forever" to PostgreSQL; the least wait it knows is 1 ms.
    timeout_ms = max(int(lock_timeout * 1000), 1)
    try:
        transaction = conn.begin()
        conn.execute(
            text(
                "SELECT set_config('lock_timeout', :ms, true),"
                " set_config('application_name', :name, true)"
            ),
            {"ms": f"{timeout_ms}ms", "name": (APPLICATION_NAME_PREFIX + holder)[:63]},
        )
        if conn.execute(lock_query).first() is None:
            applied.ensure_state_row(conn)
            conn.execute(lock_query).one()
        conn.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
        return transaction, applied.load_state(conn)
    except DBAPIError as exc:
        conn.rollback()
        if getattr(exc.orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE:
            raise StoreError(_timeout_message(lock_timeout, _pg_lock_holder(conn))) from exc
        raise StoreError(
            f"state store {redact_url(url)}: taking the state lock: {exc.orig}"
        ) from exc
    except SQLAlchemyError as exc:
        conn.rollback()
        raise StoreError(f"state store {redact_url(url)}: taking the state lock: {exc}") from exc


def _pg_lock_holder(conn: Connection) -> str | None:
    """Best effort: the holder named by another session's application_name, if any."""
    query = text(
        "SELECT application_name FROM pg_stat_activity "
        "WHERE pid <> pg_backend_pid() AND application_name LIKE :prefix "
        "AND state <> 'idle' LIMIT 1"
    )
    try:
        name = conn.execute(query, {"prefix": APPLICATION_NAME_PREFIX + "%"}).scalar()
        conn.rollback()
    except SQLAlchemyError:
        conn.rollback()
        return None
    return None if name is None else str(name)[len(APPLICATION_NAME_PREFIX) :]


def _timeout_message(lock_timeout: float, holder: str | None = None) -> str:
    by = f" ({holder})" if holder else ""
    return (
        f"another apply holds the state lock{by}; gave up after {lock_timeout:g} s (--lock-timeout)"
    )
