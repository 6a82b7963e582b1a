"""Which store a command uses, and how store URLs show up in errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import make_url

from reconciler.errors import StoreError
from reconciler.store import Store, redact_url, resolve_store_url
from reconciler.store.engine import create_store_engine, parse_store_url, search_path_schema


def test_the_cli_url_wins_over_the_environment_and_the_default(tmp_path: Path) -> None:
    env = {"RECONCILER_DB": "sqlite:////env.db"}
    assert resolve_store_url("sqlite:////cli.db", env, tmp_path) == "sqlite:////cli.db"
    assert not (tmp_path / ".reconciler").exists()


def test_the_environment_wins_over_the_default(tmp_path: Path) -> None:
    env = {"RECONCILER_DB": "sqlite:////env.db"}
    assert resolve_store_url(None, env, tmp_path) == "sqlite:////env.db"


def test_the_default_is_sqlite_in_the_repo_and_creates_its_directory(tmp_path: Path) -> None:
    url = resolve_store_url(None, {}, tmp_path)
    assert url == f"sqlite:///{(tmp_path / '.reconciler' / 'state.db').as_posix()}"
    assert (tmp_path / ".reconciler").is_dir()


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    for given in ("postgresql://u@h/db", "postgres://u@h/db"):
        assert parse_store_url(given).drivername == "postgresql+psycopg"
    engine = create_store_engine("postgresql://u@h/db")
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_the_schema_comes_from_the_search_path_option() -> None:
    url = make_url("postgresql://u@h/db?options=-csearch_path%3Dmyschema")
    assert search_path_schema(url) == "myschema"
    url = make_url("postgresql://u@h/db?options=-c%20search_path%3Dother,public")
    assert search_path_schema(url) == "other"
    assert search_path_schema(make_url("postgresql://u@h/db")) is None


def test_an_unsupported_url_is_refused_without_its_password() -> None:
    with pytest.raises(StoreError, match="unsupported store URL") as raised:
        Store.open("mysql://user:hunter2@db/x")
    assert "hunter2" not in str(raised.value)


def test_an_unreachable_store_is_reported_with_the_url_but_not_its_password() -> None:
    with pytest.raises(StoreError) as raised:
        Store.open("postgresql://user:hunter2@127.0.0.1:1/test?connect_timeout=2")
    message = str(raised.value)
    assert "cannot reach the state store postgresql+psycopg://user:***@127.0.0.1:1/test" in message
    assert "hunter2" not in message
    assert "hunter2" not in redact_url("postgresql://user:hunter2@h/db")


def test_a_sqlite_store_in_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot reach the state store"):
        Store.open(f"sqlite:///{tmp_path / 'missing' / 'state.db'}")
