"""Bringing a store's schema to the revision this reconciler needs, with Alembic.

Invariants:

- `HEAD_REVISION` names the newest file in `migrations/versions/` (a contract test
  checks it), so the warm path reads the current revision with one plain query of
  `alembic_version` and imports Alembic only when an upgrade is due: importing it costs
  a noticeable fraction of a second on every CLI call.
- An upgrade runs in one transaction that first takes a cross-process lock (SQLite:
  `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock) and re-reads the
  revision, so concurrent first opens migrate once.
- On PostgreSQL the schema named by the URL's search_path is created if missing, and
  Alembic keeps its version table in it.

Does not read or write the store's data.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.exc import SQLAlchemyError

from reconciler.errors import StoreError
from reconciler.store.engine import SQLITE_BEGIN_IMMEDIATE, redact_url, search_path_schema

HEAD_REVISION = "0003"
"""The revision id of the newest migration in `migrations/versions/`."""

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"

_PG_MIGRATION_LOCK_KEY = 0x7265636F6E63  # "reconc": the advisory lock key for upgrades


class SchemaStatus(StrEnum):
    """Where a store's schema stands relative to this reconciler's `HEAD_REVISION`."""

    EMPTY = "empty"
    """Never migrated: no version table (or, on PostgreSQL, no schema yet)."""
    CURRENT = "current"
    OUTDATED = "outdated"
    UNKNOWN = "unknown"
    """A revision this reconciler does not know: written by a newer version."""

    @property
    def is_readable(self) -> bool:
        return self is SchemaStatus.CURRENT


def read_revision(conn: Connection) -> str | None:
    """Return the store's Alembic revision, or None when it was never migrated."""
    if not conn.dialect.has_table(conn, VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def schema_status(revision: str | None) -> SchemaStatus:
    """Classify `revision` against `HEAD_REVISION`."""
    if revision is None:
        return SchemaStatus.EMPTY
    if revision == HEAD_REVISION:
        return SchemaStatus.CURRENT
    if revision in _known_revisions():
        return SchemaStatus.OUTDATED
    return SchemaStatus.UNKNOWN


def _known_revisions() -> frozenset[str]:
    return frozenset(
        path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob("[0-9]*_*.py")
    )


def load_schema_status(engine: Engine) -> SchemaStatus:
    """Read the store's revision with one plain query. Raises StoreError when unreachable."""
    try:
        with engine.connect() as conn:
            revision = read_revision(conn)
            conn.rollback()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reach the state store {redact_url(engine.url)}: {exc}") from exc
    return schema_status(revision)


def upgrade_store(engine: Engine) -> None:
    """Migrate the store to `HEAD_REVISION` in one locked transaction.

    Raises StoreError when the store is unreachable, holds a revision this reconciler
    does not know, or a migration fails (nothing of it is then kept).
    """
    shown = redact_url(engine.url)
    schema = search_path_schema(engine.url) if engine.dialect.name == "postgresql" else None
    try:
        with (
            engine.connect().execution_options(**{SQLITE_BEGIN_IMMEDIATE: True}) as conn,
            conn.begin(),
        ):
            if engine.dialect.name == "postgresql":
                conn.execute(select(text(f"pg_advisory_xact_lock({_PG_MIGRATION_LOCK_KEY})")))
                if schema is not None:
                    _create_schema(conn, schema)
            status = schema_status(read_revision(conn))
            if status is SchemaStatus.UNKNOWN:
                raise StoreError(_newer_message(shown))
            if status is not SchemaStatus.CURRENT:
                run_alembic_upgrade(conn, schema)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate the state store {shown}: {exc}") from exc


def _newer_message(shown: str) -> str:
    return (
        f"the state store {shown} was migrated by a newer reconciler "
        f"(this one knows revisions up to {HEAD_REVISION}); upgrade reconciler"
    )


def ensure_readable(status: SchemaStatus, engine: Engine) -> None:
    """Raise StoreError unless a store in `status` can be read (or is empty)."""
    shown = redact_url(engine.url)
    if status is SchemaStatus.UNKNOWN:
        raise StoreError(_newer_message(shown))
    if status is SchemaStatus.OUTDATED:
        raise StoreError(f"the state store {shown} needs a migration; open it with migrate=True")


def _create_schema(conn: Connection, schema: str) -> None:
    exists = conn.execute(
        text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": schema}
    ).first()
    if exists is None:
        quoted = conn.dialect.identifier_preparer.quote_identifier(schema)
        conn.execute(text(f"CREATE SCHEMA {quoted}"))


def run_alembic_upgrade(conn: Connection, schema: str | None, revision: str = "head") -> None:
    """Run Alembic's upgrade to `revision` on `conn`, keeping its version table in
    `schema`. No locking: `upgrade_store` is the entry point for opening a store."""
    # Imported here on purpose: see the module docstring.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    config.attributes["version_table_schema"] = schema
    command.upgrade(config, revision)
