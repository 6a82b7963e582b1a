"""The test PostgreSQL server: whether it answers, and one fresh schema per use.

The server is `RECONCILER_TEST_PG_URL` or the one every machine here runs on
127.0.0.1:5432 (database `test`, trust auth, user postgres). A schema `t_<hex>` is
named per use; `Store.open` creates it (a store URL selects it by search_path) and
`postgres_schema_url` drops it afterwards. Callers skip, saying why, when the server is
unreachable.
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

PG_URL = os.environ.get("RECONCILER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def pg_conninfo() -> str:
    """The server's URL as libpq takes it."""
    return PG_URL.replace("postgresql+psycopg://", "postgresql://")


@functools.cache
def postgres_unreachable() -> str | None:
    """None when the test PostgreSQL answers, else why not (asked once per process)."""
    try:
        with psycopg.connect(pg_conninfo(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}".strip()
    return None


def skip_without_postgres() -> None:
    """Skip the calling test, printing the reason, when the test PostgreSQL is unreachable."""
    reason = postgres_unreachable()
    if reason is not None:
        print(reason)  # noqa: T201 - the reason belongs in the test output
        pytest.skip(reason)


def schema_url(schema: str) -> str:
    """The store URL of `schema` on the test server."""
    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    with psycopg.connect(pg_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def postgres_schema_url() -> Iterator[str]:
    """Yield the URL of a new, empty schema (not yet created); drop it afterwards."""
    schema = f"t_{uuid.uuid4().hex}"
    try:
        yield schema_url(schema)
    finally:
        drop_schema(schema)


def wait_until_sessions_end(application_name: str, timeout: float = 30.0) -> None:
    """Return once no server session is named `application_name`; fail after `timeout` s.

    A client killed mid-transaction leaves its server session running until the server
    notices, and that session's transaction still ends (in a commit if COMMIT was sent).
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(pg_conninfo(), autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                (application_name,),
            ).fetchone()
            if row is not None and row[0] == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"sessions named {application_name!r} still running after {timeout} s")
            time.sleep(0.02)
