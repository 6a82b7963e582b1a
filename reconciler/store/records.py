"""The values the state store reads and writes for applied definitions.

Invariants: frozen dataclasses; every datetime is aware UTC; JSON-valued fields hold
only JSON types (dict, list, str, int, float, bool, None).

Pure: no I/O, no SQLAlchemy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler.ids import CommitSha, JobId


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreState:
    """The single state row: what the last apply made live. `serial` 0 means never applied."""

    serial: int
    commit: CommitSha | None
    main_tip: CommitSha | None
    applied_at: datetime | None
    rows_hash: str | None


EMPTY_STATE = StoreState(serial=0, commit=None, main_tip=None, applied_at=None, rows_hash=None)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedJob:
    """One job as applied: its version, hashes, input blobs and normalized definition.

    A deleted job keeps its row with `deleted_at` set.
    """

    job_id: JobId
    version: CommitSha
    commit: CommitSha
    content_hash: str
    input_blobs: Mapping[str, str]
    definition: Mapping[str, Any]
    applied_serial: int
    applied_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedJobIndex:
    """What planning compares for one applied job, without its (large) definition."""

    job_id: JobId
    version: CommitSha
    content_hash: str
    input_blobs: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class AppliedFile:
    """One repo file as applied: its blob SHA, kind and parsed normalized value."""

    path: str
    blob: str
    kind: str
    parsed: Any | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyRecord:
    """One finished apply, as `history` shows it."""

    id: int
    serial: int
    commit: CommitSha
    main_tip: CommitSha | None
    user: str
    commit_author: str | None
    applied_at: datetime
    summary: Mapping[str, Any]


AppliedRowKey = tuple[str, str, str, str, bool]
"""(job_id, version, commit, content_hash, deleted) of one `applied_jobs` row."""


def applied_rows_hash(rows: Iterable[AppliedRowKey]) -> str:
    """Return the SHA-256 hex digest of `rows`, independent of their order.

    Two stores hold the same applied rows exactly when their hashes are equal; the last
    apply records the hash so that drift (rows changed outside an apply) shows.
    """
    digest = hashlib.sha256(b"applied_jobs/v1\n")
    for job_id, version, commit, content_hash, deleted in sorted(rows):
        line = "\x1f".join((job_id, version, commit, content_hash, "1" if deleted else "0"))
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def row_key(job: AppliedJob) -> AppliedRowKey:
    """Return the part of `job` that `applied_rows_hash` covers."""
    return (job.job_id, job.version, job.commit, job.content_hash, job.deleted_at is not None)
