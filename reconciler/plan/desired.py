"""The normalized definition of a job: what apply stores and plan compares.

Invariants: normalized definitions are plain JSON values with every default and
reference resolved (schedules with their zone, profile, timeout, catalog), so two
commits that mean the same job give equal definitions and equal content hashes.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.ids import JobId
from reconciler.load.model import LoadedJob


@dataclass(frozen=True, slots=True, kw_only=True)
class DesiredJob:
    """A job as the commit defines it."""

    job_id: JobId
    path: str
    definition: Mapping[str, Any]
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


def normalize_job(job: LoadedJob) -> dict[str, Any]:
    """The normalized definition of a loaded job."""
    doc: dict[str, Any] = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["schedules"] = [s.to_json() for s in job.schedules]
    doc["profile"] = job.profile
    doc["timeoutSeconds"] = job.timeout_seconds
    if job.catalog is not None:
        if "sql" in doc:
            doc["sql"]["catalog"] = job.catalog
        elif "sql" in doc.get("streaming", {}):
            doc["streaming"]["sql"]["catalog"] = job.catalog
    return doc


def content_hash(definition: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of a definition."""
    canonical = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def desired_job(job: LoadedJob) -> DesiredJob:
    definition = normalize_job(job)
    return DesiredJob(
        job_id=job.id,
        path=job.path,
        definition=definition,
        content_hash=content_hash(definition),
        input_blobs=dict(job.version_inputs),
    )
