"""Run records for scheduled fires: built cheaply (no git, no secrets) so the loop can
write thousands of them with their fire-ledger rows in one transaction; what they run is
resolved when they are launched (saved query, snapshot, profile, secrets).

Pure: builds values from the applied definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.ids import CommitSha, JobId
from reconciler.runs.record import Run, new_run_id
from reconciler.runs.state import RunState

DEFAULT_HOST_SLOTS = 8


def host_slots(settings: Mapping[str, Any]) -> int:
    targets = settings.get("targets") or {}
    local = targets.get("local") or {}
    return int(local.get("maxConcurrentRuns") or DEFAULT_HOST_SLOTS)


def scheduled_run(
    *,
    job_id: str,
    schedule_id: str,
    scheduled_at: datetime,
    definition: Mapping[str, Any],
    commit: CommitSha,
    version: CommitSha,
    settings: Mapping[str, Any],
    catalog_path: str | None,
    host: str,
    runs_dir: Path,
    now: datetime,
) -> Run:
    """A WAITING run for one FIRED scheduled time; launched (and resolved) by the queue."""
    run_id = new_run_id()
    kind = next(k for k in ("sql", "python", "command", "streaming") if k in definition)
    return Run(
        id=run_id,
        job_id=JobId(job_id),
        attempt=0,
        previous_run_id=None,
        trigger=f"schedule:{schedule_id}",
        commit=commit,
        version=version,
        draft_ref=None,
        state=RunState.WAITING,
        created_at=now,
        last_modified_on=now,
        arguments=dict(definition.get("arguments") or {}),
        timeout=int(definition.get("timeoutSeconds") or 3600),
        log_location=str(runs_dir / run_id),
        target=f"local:{host}",
        details={
            "definition": dict(definition),
            "kind": kind,
            "host": host,
            "hostSlots": host_slots(settings),
            "catalogPath": catalog_path,
            "queueTimeoutSeconds": definition.get("queueTimeoutSeconds", 3600),
            "pip": dict(settings.get("pip") or {}),
            "scheduledAt": scheduled_at.isoformat(),
            "resolveAtLaunch": True,
        },
    )
