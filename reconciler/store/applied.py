"""The SQL that reads and writes applied definitions: state, applied_jobs, applied_files, applies.

Every function takes an open `Connection` and runs inside the caller's transaction;
none begins, commits or rolls back. Results are ordered by key (Python string order,
not the database's collation), so every backend returns the same order.

Invariants: bulk writes are one `executemany` each; `load_job_index` reads only the
columns planning compares and decodes only `input_blobs`.

Does not wrap errors: callers turn `SQLAlchemyError` into `StoreError` with context.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from reconciler.ids import CommitSha, JobId
from reconciler.store.records import (
    EMPTY_STATE,
    AppliedFile,
    AppliedJob,
    AppliedJobIndex,
    AppliedRowKey,
    ApplyRecord,
    StoreState,
    applied_rows_hash,
)
from reconciler.store.tables import STATE_ROW_ID, applied_files, applied_jobs, applies, state

_IN_CHUNK = 500
"""Ids per `IN (...)` list: well under SQLite's and PostgreSQL's bind-parameter limits."""


def load_state(conn: Connection) -> StoreState:
    """Return the state row, or serial 0 when nothing was ever applied."""
    row = conn.execute(
        select(
            state.c.serial, state.c.commit, state.c.main_tip, state.c.applied_at, state.c.rows_hash
        ).where(state.c.id == STATE_ROW_ID)
    ).first()
    if row is None:
        return EMPTY_STATE
    return StoreState(
        serial=row.serial,
        commit=None if row.commit is None else CommitSha(row.commit),
        main_tip=None if row.main_tip is None else CommitSha(row.main_tip),
        applied_at=row.applied_at,
        rows_hash=row.rows_hash,
    )


def load_job_index(conn: Connection, *, include_deleted: bool) -> dict[JobId, AppliedJobIndex]:
    """Return version, content hash and input blobs of every (live) applied job, by id."""
    # Read as text and decoded here: several times cheaper than the JSON result processors
    # (SQLAlchemy's on SQLite, psycopg's JSONB loader on PostgreSQL).
    blobs_column = cast(applied_jobs.c.input_blobs, Text)
    query = select(
        applied_jobs.c.job_id,
        applied_jobs.c.version,
        applied_jobs.c.content_hash,
        blobs_column,
    ).order_by(_in_code_point_order(conn, applied_jobs.c.job_id))
    if not include_deleted:
        query = query.where(applied_jobs.c.deleted_at.is_(None))
    loads = json.loads
    return {
        job_id: AppliedJobIndex(
            job_id=job_id,
            version=version,
            content_hash=content_hash,
            input_blobs=loads(blobs),
        )
        for job_id, version, content_hash, blobs in conn.execute(query)
    }


def load_jobs(
    conn: Connection, ids: Collection[JobId] | None, *, include_deleted: bool
) -> dict[JobId, AppliedJob]:
    """Return the applied jobs named by `ids` (all when None) that exist, by id."""
    query = select(applied_jobs).order_by(_in_code_point_order(conn, applied_jobs.c.job_id))
    if not include_deleted:
        query = query.where(applied_jobs.c.deleted_at.is_(None))
    rows = _select_keyed(conn, query, applied_jobs.c.job_id, ids)
    return {
        JobId(row.job_id): AppliedJob(
            job_id=JobId(row.job_id),
            version=CommitSha(row.version),
            commit=CommitSha(row.commit),
            content_hash=row.content_hash,
            input_blobs=row.input_blobs,
            definition=row.definition,
            applied_serial=row.applied_serial,
            applied_at=row.applied_at,
            deleted_at=row.deleted_at,
        )
        for row in rows
    }


def _select_keyed(
    conn: Connection, query: Select[Any], column: ColumnElement[str], keys: Collection[str] | None
) -> list[Row[Any]]:
    """Rows of `query` (ordered by `column`) whose `column` is in `keys` (all when None).

    Keys go in ascending chunks and each chunk comes back ordered: the whole is ordered.
    """
    if keys is None:
        return list(conn.execute(query))
    rows: list[Row[Any]] = []
    for chunk in _chunks(sorted(set(keys))):
        rows.extend(conn.execute(query.where(column.in_(chunk))))
    return rows


def load_files(conn: Connection, paths: Collection[str] | None = None) -> dict[str, AppliedFile]:
    """Return the applied repo files among `paths` (all when None) that exist, by path."""
    # Read as text and decoded here, and only when not NULL (as in `load_job_index`).
    query = select(
        applied_files.c.path,
        applied_files.c.blob,
        applied_files.c.kind,
        cast(applied_files.c.parsed, Text),
    ).order_by(_in_code_point_order(conn, applied_files.c.path))
    rows = _select_keyed(conn, query, applied_files.c.path, paths)
    loads = json.loads
    return {
        path: AppliedFile(
            path=path, blob=blob, kind=kind, parsed=None if parsed is None else loads(parsed)
        )
        for path, blob, kind, parsed in (tuple(row) for row in rows)
    }


def load_applies(conn: Connection, *, limit: int | None) -> list[ApplyRecord]:
    """Return the recorded applies, newest (highest serial) first."""
    query = select(
        applies.c.id,
        applies.c.serial,
        applies.c.commit,
        applies.c.main_tip,
        applies.c.user,
        applies.c.commit_author,
        applies.c.applied_at,
        applies.c.summary,
    ).order_by(applies.c.serial.desc())
    if limit is not None:
        query = query.limit(limit)
    return [
        ApplyRecord(
            id=row.id,
            serial=row.serial,
            commit=CommitSha(row.commit),
            main_tip=None if row.main_tip is None else CommitSha(row.main_tip),
            user=row.user,
            commit_author=row.commit_author,
            applied_at=row.applied_at,
            summary=row.summary,
        )
        for row in conn.execute(query)
    ]


def load_applied_rows_hash(conn: Connection) -> str:
    """Return `applied_rows_hash` of the `applied_jobs` rows as they are now."""
    rows: list[AppliedRowKey] = [
        (job_id, version, commit, content_hash, deleted_at is not None)
        for job_id, version, commit, content_hash, deleted_at in conn.execute(
            select(
                applied_jobs.c.job_id,
                applied_jobs.c.version,
                applied_jobs.c.commit,
                applied_jobs.c.content_hash,
                applied_jobs.c.deleted_at,
            )
        )
    ]
    return applied_rows_hash(rows)


def write_jobs(conn: Connection, jobs: Sequence[AppliedJob]) -> None:
    """Insert or replace `jobs` (a job given again is revived with its `deleted_at`)."""
    if not jobs:
        return
    params = [
        {
            "job_id": job.job_id,
            "version": job.version,
            "commit": job.commit,
            "content_hash": job.content_hash,
            "input_blobs": dict(job.input_blobs),
            "definition": dict(job.definition),
            "applied_serial": job.applied_serial,
            "applied_at": job.applied_at,
            "deleted_at": job.deleted_at,
        }
        for job in jobs
    ]
    conn.execute(_upsert(conn, applied_jobs, "job_id"), params)


def write_jobs_deleted(conn: Connection, ids: Collection[JobId], at: datetime) -> None:
    """Mark the live jobs among `ids` deleted at `at`; rows stay, `applied_serial` unchanged."""
    if not ids:
        return
    statement = (
        update(applied_jobs)
        .where(applied_jobs.c.job_id == bindparam("b_job_id"))
        .where(applied_jobs.c.deleted_at.is_(None))
        .values(deleted_at=at)
    )
    conn.execute(statement, [{"b_job_id": job_id} for job_id in sorted(set(ids))])


def write_files(
    conn: Connection, upserts: Sequence[AppliedFile], deletes: Collection[str], *, serial: int
) -> None:
    """Insert or replace `upserts` (recorded at `serial`) and remove the paths in `deletes`."""
    if deletes:
        statement = delete(applied_files).where(applied_files.c.path == bindparam("b_path"))
        conn.execute(statement, [{"b_path": path} for path in sorted(set(deletes))])
    if upserts:
        params = [
            {
                "path": f.path,
                "blob": f.blob,
                "kind": f.kind,
                "parsed": f.parsed,
                "applied_serial": serial,
            }
            for f in upserts
        ]
        conn.execute(_upsert(conn, applied_files, "path"), params)


def write_apply(
    conn: Connection,
    *,
    serial: int,
    commit: CommitSha,
    main_tip: CommitSha | None,
    user: str,
    commit_author: str | None,
    at: datetime,
    summary: dict[str, Any],
    plan: dict[str, Any] | None,
) -> ApplyRecord:
    """Record an apply at `serial` and make the state row point at it; return the record."""
    apply_id = conn.execute(
        insert(applies)
        .values(
            serial=serial,
            commit=commit,
            main_tip=main_tip,
            user=user,
            commit_author=commit_author,
            applied_at=at,
            summary=summary,
            plan=plan,
        )
        .returning(applies.c.id)
    ).scalar_one()
    rows_hash = load_applied_rows_hash(conn)
    values = {
        "serial": serial,
        "commit": commit,
        "main_tip": main_tip,
        "apply_id": apply_id,
        "applied_at": at,
        "rows_hash": rows_hash,
    }
    conn.execute(update(state).where(state.c.id == STATE_ROW_ID).values(**values))
    return ApplyRecord(
        id=apply_id,
        serial=serial,
        commit=commit,
        main_tip=main_tip,
        user=user,
        commit_author=commit_author,
        applied_at=at,
        summary=summary,
    )


def ensure_state_row(conn: Connection) -> None:
    """Insert the state row (serial 0) unless it exists; safe when two writers race."""
    statement = _insert_for(conn, state).values(id=STATE_ROW_ID, serial=0)
    conn.execute(statement.on_conflict_do_nothing(index_elements=["id"]))


def _upsert(conn: Connection, table: Table, key: str) -> Insert:
    columns = [c.name for c in table.columns]
    statement = _insert_for(conn, table)
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[key],
        set_={name: excluded[name] for name in columns if name != key},
    )


def _insert_for(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _in_code_point_order(conn: Connection, column: ColumnElement[str]) -> ColumnElement[str]:
    """`column` for ORDER BY in Python's string order (PostgreSQL's default collation differs)."""
    if conn.dialect.name == "postgresql":
        return column.collate("C")
    return column


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]
