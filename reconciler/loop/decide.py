"""Deciding scheduled times: for one schedule, which times in (cursor, now] fire, are
skipped or are missed, and how far the cursor moves.

Invariants: every scheduled time is decided at most once, because decisions start
strictly after the cursor and the cursor moves to `now` with them (written in the same
transaction as the fire ledger rows); after downtime only the most recent due time may
fire (no storm) and the older ones are MISSED "superseded" (at most `MAX_MISSED_ROWS`
rows, the rest counted); a disabled or suspended schedule decides nothing and its
cursor follows `now`, so turning it back on fires nothing from the stopped period; a
changed schedule takes effect from the apply that changed it.
Pure: no I/O; `now` is passed in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import lru_cache

from reconciler.schedule import Due, due

MAX_MISSED_ROWS = 100


class Outcome(StrEnum):
    FIRED = "FIRED"
    SKIPPED = "SKIPPED"
    MISSED = "MISSED"


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveSchedule:
    """An applied schedule of an applied job, as the loop sees it."""

    job_id: str
    schedule_id: str
    cron: str
    timezone: str
    starting_deadline_seconds: int | None
    concurrency_policy: str
    enabled: bool
    job_suspended: bool
    applied_at: datetime
    """When the job's current definition became live."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.job_id, self.schedule_id)

    @property
    def active(self) -> bool:
        return self.enabled and not self.job_suspended

    def definition_hash(self) -> str:
        """Changes when anything that decides fire times changes (on/off included)."""
        return _definition_hash(
            self.cron,
            self.timezone,
            self.starting_deadline_seconds,
            self.concurrency_policy,
            self.active,
        )


@lru_cache(maxsize=4096)
def _definition_hash(
    cron: str, timezone: str, deadline: int | None, policy: str, active: bool
) -> str:
    doc = [cron, timezone, deadline, policy, active]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


@lru_cache(maxsize=4096)
def _due(
    cron: str, tz: str, since: datetime, now: datetime, deadline: int | None, listed: int
) -> Due:
    """`schedule.due`, remembered: the schedules of a herd share their cron, zone, cursor
    and `now`, so one tick computes their answer once (`Due` is immutable)."""
    return due(
        cron, tz, since=since, now=now, starting_deadline_seconds=deadline, max_missed_listed=listed
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Cursor:
    cursor_at: datetime
    definition_hash: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FireDecision:
    scheduled_at: datetime
    outcome: Outcome
    reason: str | None = None
    overflow_count: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    schedule: LiveSchedule
    rows: tuple[FireDecision, ...]
    fire_at: datetime | None
    """The scheduled time to start a run for (its row is FIRED)."""
    replace: bool
    """REPLACE policy: stop the job's active runs before starting."""
    cursor: Cursor
    next_at: datetime | None


def decide(
    schedule: LiveSchedule, cursor: Cursor | None, *, now: datetime, active_runs: int
) -> Decision:
    """Decide every scheduled time of `schedule` in (since, now]."""
    digest = schedule.definition_hash()
    if cursor is None:
        since = schedule.applied_at
    elif cursor.definition_hash != digest:
        since = max(cursor.cursor_at, schedule.applied_at)
    else:
        since = cursor.cursor_at
    moved = Cursor(cursor_at=max(now, since), definition_hash=digest)
    if not schedule.active or since >= now:
        next_at = None
        if schedule.active:
            next_at = _due(
                schedule.cron, schedule.timezone, now, now, None, MAX_MISSED_ROWS
            ).next_at
        return Decision(
            schedule=schedule, rows=(), fire_at=None, replace=False, cursor=moved, next_at=next_at
        )
    result = _due(
        schedule.cron,
        schedule.timezone,
        since,
        now,
        schedule.starting_deadline_seconds,
        MAX_MISSED_ROWS,
    )
    rows: list[FireDecision] = []
    listed = list(result.missed_at)
    overflow = result.missed - len(listed)
    latest_missed = listed[-1] if listed and result.fire_at is None else None
    for i, when in enumerate(listed):
        reason = "deadline" if when == latest_missed else "superseded"
        rows.append(
            FireDecision(
                scheduled_at=when,
                outcome=Outcome.MISSED,
                reason=reason,
                overflow_count=overflow if i == 0 else 0,
            )
        )
    fire_at = None
    replace = False
    if result.fire_at is not None:
        policy = schedule.concurrency_policy
        if policy == "FORBID" and active_runs > 0:
            rows.append(
                FireDecision(
                    scheduled_at=result.fire_at,
                    outcome=Outcome.SKIPPED,
                    reason=f"FORBID: {active_runs} run(s) of the job still active",
                )
            )
        else:
            fire_at = result.fire_at
            replace = policy == "REPLACE" and active_runs > 0
            rows.append(FireDecision(scheduled_at=fire_at, outcome=Outcome.FIRED))
    rows.sort(key=lambda r: r.scheduled_at)
    return Decision(
        schedule=schedule,
        rows=tuple(rows),
        fire_at=fire_at,
        replace=replace,
        cursor=moved,
        next_at=result.next_at,
    )
