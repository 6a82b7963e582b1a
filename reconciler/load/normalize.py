"""The normalized definition of a loaded job and its content hash.

Invariants: normalized definitions are plain JSON values with every default and
reference resolved (schedules with their zone, profile, timeout, catalog), so two
commits that mean the same job give equal definitions and equal content hashes.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from reconciler.load.model import LoadedJob


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
