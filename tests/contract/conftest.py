"""Fixtures of the contract suites: one store URL per implementation (SQLite, PostgreSQL).

The PostgreSQL URL is `RECONCILER_TEST_PG_URL` or the server every machine here runs on
127.0.0.1:5432 (database `test`, trust auth); each test gets its own schema
`t_<hex>`, which `Store.open` creates and the fixture drops. When the server is
unreachable the PostgreSQL cases are skipped, saying why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_URL = os.environ.get("RECONCILER_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_conninfo() -> str:
    return PG_URL.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def postgres_unreachable() -> str | None:
    """None when the test PostgreSQL answers, else why not."""
    try:
        with psycopg.connect(_pg_conninfo(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}".strip()
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_unreachable: str | None
) -> Iterator[str]:
    """A URL of an empty store of each implementation."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    if postgres_unreachable is not None:
        print(postgres_unreachable)  # noqa: T201 - the reason belongs in the test output
        pytest.skip(postgres_unreachable)
    schema = f"t_{uuid.uuid4().hex}"
    separator = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(_pg_conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
