"""The two sides a plan pairs: jobs as a commit defines them, and as the store recorded them.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.ids import JobId
from reconciler.load.model import LoadedJob
from reconciler.load.normalize import content_hash, normalize_job
from reconciler.load.reuse import ReusedJob


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredJob:
    """A job as the commit defines it."""

    job_id: JobId
    path: str
    definition: Mapping[str, Any] | None
    """None for a job reused from recorded facts without its definition (see load.reuse)."""
    content_hash: str
    input_blobs: Mapping[str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedJob:
    """A job as the store recorded it at the last apply (definition read only when needed)."""

    job_id: JobId
    version: str
    content_hash: str
    input_blobs: Mapping[str, str]
    definition: Mapping[str, Any] | None = None


def reused_desired_job(job: ReusedJob) -> DesiredJob:
    return DesiredJob(
        job_id=job.id,
        path=job.path,
        definition=job.definition,
        content_hash=job.content_hash,
        input_blobs=dict(job.input_blobs),
    )


def desired_job(job: LoadedJob) -> DesiredJob:
    definition = normalize_job(job)
    return DesiredJob(
        job_id=job.id,
        path=job.path,
        definition=definition,
        content_hash=content_hash(definition),
        input_blobs=dict(job.version_inputs),
    )


__all__ = [
    "DesiredJob",
    "RecordedJob",
    "content_hash",
    "desired_job",
    "normalize_job",
    "reused_desired_job",
]
