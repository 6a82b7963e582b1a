"""Typed identifiers, so a run id cannot be passed where a job id is meant.

Pure: no I/O. Validation of id syntax lives in `reconciler.spec.ids`.
"""

from typing import NewType

JobId = NewType("JobId", str)
"""A job's dotted id, from its path under jobs/: jobs/sales/eu/daily.yaml -> sales.eu.daily."""

ScheduleId = NewType("ScheduleId", str)
"""A schedule's id within its job (or a reusable schedule's file name)."""

RunId = NewType("RunId", str)
"""A run id: "jr_" followed by 32 hex digits."""

CommitSha = NewType("CommitSha", str)
"""A full 40-hex git commit SHA."""

BlobSha = NewType("BlobSha", str)
"""A full 40-hex git blob SHA."""
