"""The run record: one execution of a job, shaped like an AWS Glue JobRun.

Invariants: ids are `jr_` + 32 hex digits; times are aware UTC; `arguments` and every
other text field hold no secret value (callers redact before building a record).
Pure: no I/O (`new_run_id` takes its randomness from `secrets`, nothing else).
"""

from __future__ import annotations

import re
import secrets as random_source
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from reconciler.ids import CommitSha, JobId, RunId
from reconciler.runs.state import RunState

RUN_ID = re.compile(r"jr_[0-9a-f]{32}")
REDACTED = "****"


def new_run_id() -> RunId:
    return RunId("jr_" + random_source.token_hex(16))


def is_run_id(value: str) -> bool:
    return RUN_ID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One run of a job. `details` holds what varies by kind (SQL result preview, the
    definition it ran, why it waits, bookmark, restores trailer)."""

    id: RunId
    job_id: JobId
    attempt: int
    previous_run_id: RunId | None
    trigger: str
    commit: CommitSha
    version: CommitSha | None
    draft_ref: str | None
    state: RunState
    created_at: datetime
    last_modified_on: datetime
    started_on: datetime | None = None
    completed_on: datetime | None = None
    arguments: Mapping[str, str] = field(default_factory=dict)
    error_message: str | None = None
    execution_time: int | None = None
    timeout: int | None = None
    profile: Mapping[str, Any] | None = None
    snapshots: Mapping[str, Any] | None = None
    predecessors: tuple[Mapping[str, str], ...] = ()
    exit_code: int | None = None
    log_location: str | None = None
    target: str = "local"
    supervisor_pid: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_draft(self) -> bool:
        return self.draft_ref is not None

    def with_changes(self, **changes: Any) -> Run:
        return replace(self, **changes)


def redact(text: str, values: Iterable[str]) -> str:
    """`text` with every occurrence of each secret value replaced by ****."""
    for value in sorted({v for v in values if v}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def redact_mapping(mapping: Mapping[str, str], values: Iterable[str]) -> dict[str, str]:
    secrets = list(values)
    return {k: redact(v, secrets) for k, v in mapping.items()}
