"""Fixtures of the contract suites: one store URL per implementation (SQLite, PostgreSQL).

The PostgreSQL server is the one `tests.pg` names (`RECONCILER_TEST_PG_URL`, else
127.0.0.1:5432, database `test`, trust auth); each test gets its own schema
`t_<hex>`, which `Store.open` creates and the fixture drops. When the server is
unreachable the PostgreSQL cases are skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg


@pytest.fixture(scope="session")
def postgres_unreachable() -> str | None:
    """None when the test PostgreSQL answers, else why not."""
    return pg.postgres_unreachable()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty store of each implementation."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    pg.skip_without_postgres()
    with pg.postgres_schema_url() as url:
        yield url
