"""Alembic's environment for the state store: runs migrations on a connection passed in.

`reconciler.store.migrate` calls Alembic with the open connection in
`config.attributes["connection"]` (already inside a transaction, which the caller
commits) and the PostgreSQL schema for the version table in
`config.attributes["version_table_schema"]`. Offline (SQL script) mode is not supported.
"""

from __future__ import annotations

from alembic import context

from reconciler.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "reconciler's migrations run through reconciler.store.migrate.upgrade_store only"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table_schema=config.attributes.get("version_table_schema"),
)
with context.begin_transaction():
    context.run_migrations()
