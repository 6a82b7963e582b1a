"""Which store to use and how to connect to it: URL resolution and engine creation.

Invariants:

- The URL is `--db` > `RECONCILER_DB` > SQLite at `<repo>/.reconciler/state.db`.
- SQLite engines run in WAL mode (synchronous=NORMAL) with a busy timeout and foreign
  keys on, and let
  reconciler issue its own `BEGIN` (pysqlite's implicit transactions are off), so a
  connection with the execution option `SQLITE_BEGIN_IMMEDIATE` takes the database's
  write lock when its transaction begins.
- PostgreSQL goes through psycopg 3: `postgresql://` and `postgres://` URLs are
  rewritten to `postgresql+psycopg://`.
- A URL shown in a message never shows its password (`redact_url`).

Does not create tables or schemas (see `migrate`).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ArgumentError, SQLAlchemyError, StatementError
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from reconciler.errors import StoreError

DB_ENV = "RECONCILER_DB"
DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite writer waits for another process's write lock before failing."""

SQLITE_BEGIN_IMMEDIATE = "reconciler_sqlite_begin_immediate"
"""Execution option: begin SQLite transactions with `BEGIN IMMEDIATE` (take the write lock)."""

SQLITE_LOCK_TIMEOUT = "reconciler_sqlite_lock_timeout"
"""Execution option: seconds `BEGIN IMMEDIATE` waits for the write lock (else the default)."""


def resolve_store_url(cli_url: str | None, env: Mapping[str, str], repo_root: Path) -> str:
    """Return the store URL: `cli_url`, else `RECONCILER_DB`, else the repo's SQLite file.

    The default creates `<repo_root>/.reconciler/`; raises StoreError when it cannot.
    """
    if cli_url:
        return cli_url
    from_env = env.get(DB_ENV)
    if from_env:
        return from_env
    state_dir = repo_root / ".reconciler"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the state directory {state_dir}: {exc}") from exc
    return f"sqlite:///{(state_dir / 'state.db').as_posix()}"


def redact_url(url: str | URL) -> str:
    """Return `url` as text with its password hidden; never raises."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable store URL>"


def parse_store_url(url: str | URL) -> URL:
    """Return the SQLAlchemy URL for `url`, with PostgreSQL routed to psycopg 3.

    Raises StoreError for an unparsable URL or an unsupported database.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"invalid store URL {redact_url(url)}: {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        return parsed.set(drivername="sqlite+pysqlite")
    raise StoreError(
        f"unsupported store URL {redact_url(parsed)}: use sqlite:///PATH or postgresql://..."
    )


def search_path_schema(url: URL) -> str | None:
    """Return the first schema of the `search_path` set in a PostgreSQL URL's `options`."""
    options = url.query.get("options")
    if options is None:
        return None
    text = options if isinstance(options, str) else " ".join(options)
    words = shlex.split(text)
    settings: list[str] = []
    for index, word in enumerate(words):
        if word == "-c" and index + 1 < len(words):
            settings.append(words[index + 1])
        elif word.startswith(("-c", "--")):
            settings.append(word[2:])
    for setting in settings:
        name, _, value = setting.partition("=")
        if name.strip().replace("-", "_") == "search_path":
            first = value.split(",")[0].strip().strip('"')
            return first or None
    return None


@contextmanager
def translate_errors(what: str, url: str | URL) -> Iterator[None]:
    """Turn a SQLAlchemy error raised inside into a StoreError naming `what` and the store."""
    try:
        yield
    except SQLAlchemyError as exc:
        detail = exc.orig if isinstance(exc, StatementError) and exc.orig else exc
        raise StoreError(f"state store {redact_url(url)}: {what}: {detail}") from exc


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def create_store_engine(url: str | URL, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Engine:
    """Return an Engine for the store at `url` (see the module docstring for its settings).

    Does not connect. Raises StoreError for an invalid or unsupported URL.
    """
    parsed = parse_store_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed, busy_timeout)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = 10
    return create_engine(
        parsed,
        connect_args=connect_args,
        json_serializer=_json_dumps,
        pool_pre_ping=True,
    )


def _create_sqlite_engine(url: URL, busy_timeout: float) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    if in_memory:
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout},
            poolclass=StaticPool,
            json_serializer=_json_dumps,
        )
    else:
        engine = create_engine(
            url, connect_args={"timeout": busy_timeout}, json_serializer=_json_dumps
        )
    default_timeout_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # pysqlite's own implicit BEGIN would defeat BEGIN IMMEDIATE; we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                # WAL's usual setting: a commit survives any process crash (a killed apply
                # or serve); only a power loss may lose the last commits, never corrupt.
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={default_timeout_ms}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if not options.get(SQLITE_BEGIN_IMMEDIATE):
            conn.exec_driver_sql("BEGIN")
            return
        lock_timeout = options.get(SQLITE_LOCK_TIMEOUT)
        if lock_timeout is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        conn.exec_driver_sql(f"PRAGMA busy_timeout={max(int(float(lock_timeout) * 1000), 0)}")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={default_timeout_ms}")

    return engine


@contextmanager
def in_transaction(
    engine: Engine, what: str, conn: Connection | None, *, write: bool = False
) -> Iterator[Connection]:
    """Yield `conn` as is (the caller's transaction), or a new connection in a
    transaction committed at the end (a SQLite write one takes the write lock at once).
    Database errors become StoreError naming `what` and the store."""
    with translate_errors(what, engine.url):
        if conn is not None:
            yield conn
            return
        with engine.connect() as own:
            if write:
                own.execution_options(**{SQLITE_BEGIN_IMMEDIATE: True})
            with own.begin():
                yield own
