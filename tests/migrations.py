"""Test helper: a store left at an older migration revision, as an older reconciler left it."""

from __future__ import annotations

from sqlalchemy import text

from reconciler.store.engine import create_store_engine, search_path_schema
from reconciler.store.migrate import run_alembic_upgrade


def migrate_to(url: str, revision: str) -> None:
    """Bring an empty store to `revision` only."""
    engine = create_store_engine(url)
    schema = search_path_schema(engine.url) if engine.dialect.name == "postgresql" else None
    try:
        with engine.begin() as conn:
            if schema is not None:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            run_alembic_upgrade(conn, schema, revision)
    finally:
        engine.dispose()
