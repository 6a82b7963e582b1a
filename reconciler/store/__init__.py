"""The state store: what was applied, runs, the fire ledger, bookmarks, leases and loop state.

SQLAlchemy Core 2.x over SQLite (default, WAL) or PostgreSQL (psycopg 3), schema by
Alembic migrations. Modules: `engine` (URL and engine), `tables`, `migrate`,
`records` (the values), `applied` (their SQL), `transaction` (the apply lock and
transaction), `store` (the `Store` entry point), `runs` (`RunStore`: run records and
the queue lock), `bookmarks`, `leases` (the leader lease and its fencing token),
`fires` (the fire ledger and schedule cursors) and `loopstate` (what `status` shows).

Imports only downward (sqlalchemy, reconciler.errors, reconciler.ids); the pure core
never imports this package.
"""

from reconciler.store.engine import create_store_engine, redact_url, resolve_store_url
from reconciler.store.records import (
    AppliedFile,
    AppliedJob,
    AppliedJobIndex,
    AppliedRowKey,
    ApplyRecord,
    StoreState,
    applied_rows_hash,
    row_key,
)
from reconciler.store.store import DEFAULT_LOCK_TIMEOUT, Store
from reconciler.store.transaction import ApplyTransaction

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "AppliedFile",
    "AppliedJob",
    "AppliedJobIndex",
    "AppliedRowKey",
    "ApplyRecord",
    "ApplyTransaction",
    "Store",
    "StoreState",
    "applied_rows_hash",
    "create_store_engine",
    "redact_url",
    "resolve_store_url",
    "row_key",
]
