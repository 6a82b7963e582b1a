"""The state store's entry point: open a store, read what was applied, start an apply.

Invariants:

- `Store.open` reaches the database once on the warm path (one query of the Alembic
  revision) and migrates only when that revision is not this reconciler's head.
- Each read outside an apply runs in its own short transaction; a store that was never
  migrated (opened with `migrate=False`) reads as empty: serial 0, no jobs, no files.
- Writes to applied definitions happen only inside `apply_transaction`.

Does not plan, parse or compare definitions; does not read the clock (callers pass
every time in).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TypeVar

from sqlalchemy import Connection, Engine

from reconciler.errors import StoreError
from reconciler.ids import JobId
from reconciler.store import applied
from reconciler.store.engine import create_store_engine, redact_url, translate_errors
from reconciler.store.migrate import (
    SchemaStatus,
    ensure_readable,
    load_schema_status,
    upgrade_store,
)
from reconciler.store.records import (
    EMPTY_STATE,
    AppliedFile,
    AppliedJob,
    AppliedJobIndex,
    ApplyRecord,
    StoreState,
    applied_rows_hash,
)
from reconciler.store.transaction import ApplyTransaction, open_apply_transaction

T = TypeVar("T")

DEFAULT_LOCK_TIMEOUT = 60.0
"""Seconds an apply waits for another apply's state lock unless told otherwise."""


class Store:
    """A connection pool to one state store, with the reads and the apply transaction."""

    def __init__(self, engine: Engine, status: SchemaStatus) -> None:
        self._engine = engine
        self._status = status

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Store:
        """Open the store at `url`, migrating it to this reconciler's schema unless told not to.

        On PostgreSQL the schema named by the URL's search_path is created if missing.
        Raises StoreError (with the URL, password hidden) when the store is unreachable,
        was migrated by a newer reconciler, needs a migration and `migrate` is False, or
        a migration fails.
        """
        engine = create_store_engine(url)
        try:
            status = load_schema_status(engine)
            if migrate and status is not SchemaStatus.CURRENT:
                upgrade_store(engine)
                status = SchemaStatus.CURRENT
            ensure_readable(status, engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, status)

    @property
    def url(self) -> str:
        """The store's URL with its password hidden."""
        return redact_url(self._engine.url)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for the other store modules (runs, fires, leases)."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection; the Store is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def read_state(self) -> StoreState:
        """Return what the last apply made live; serial 0 when nothing was applied."""
        return self._read("reading the state", applied.load_state, EMPTY_STATE)

    def read_job_index(self, *, include_deleted: bool = False) -> dict[JobId, AppliedJobIndex]:
        """Return version, content hash and input blobs of every applied job, by id."""
        return self._read(
            "reading the applied job index",
            lambda conn: applied.load_job_index(conn, include_deleted=include_deleted),
            {},
        )

    def read_jobs(
        self, ids: Collection[JobId] | None = None, *, include_deleted: bool = False
    ) -> dict[JobId, AppliedJob]:
        """Return the applied jobs among `ids` (all when None) that exist, by id."""
        return self._read(
            "reading applied jobs",
            lambda conn: applied.load_jobs(conn, ids, include_deleted=include_deleted),
            {},
        )

    def read_files(self, paths: Collection[str] | None = None) -> dict[str, AppliedFile]:
        """Return the applied repo files among `paths` (all when None) that exist, by path."""
        return self._read("reading applied files", lambda conn: applied.load_files(conn, paths), {})

    def list_applies(self, *, limit: int | None = None) -> list[ApplyRecord]:
        """Return the recorded applies, newest first, at most `limit` of them."""
        return self._read(
            "listing applies", lambda conn: applied.load_applies(conn, limit=limit), []
        )

    def applied_rows_hash(self) -> str:
        """Return the hash of the applied_jobs rows as they are now (see `applied_rows_hash`)."""
        return self._read(
            "hashing applied jobs", applied.load_applied_rows_hash, applied_rows_hash(())
        )

    def apply_transaction(
        self, *, holder: str, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    ) -> AbstractContextManager[ApplyTransaction]:
        """Return a context manager that holds the state lock and yields the transaction.

        `holder` names who applies (shown to a waiting PostgreSQL apply). Raises
        StoreError when another apply holds the lock for more than `lock_timeout`
        seconds, or when the store was never migrated.
        """
        if self._status is not SchemaStatus.CURRENT:
            raise StoreError(f"the state store {self.url} has no tables; open it with migrate=True")
        return open_apply_transaction(self._engine, holder=holder, lock_timeout=lock_timeout)

    def _read(self, what: str, load: Callable[[Connection], T], empty: T) -> T:
        if self._status is SchemaStatus.EMPTY:
            return empty
        with self._connection(what) as conn:
            return load(conn)

    @contextmanager
    def _connection(self, what: str) -> Iterator[Connection]:
        with translate_errors(what, self._engine.url), self._engine.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()
