"""The plan: what applying a commit would change, as a value.

Invariants: changes are ordered by action (create, update, delete), then job id;
within a change, fields by path, files by path, schedules by id; changed shared files
(`affects`) by path, each with its jobs by id. The same inputs and
`now` give an equal plan, so rendered plans are byte-stable.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from reconciler.ids import JobId
from reconciler.load.diagnostic import Diagnostic


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def order(self) -> int:
        return _ORDER[self]

    @property
    def symbol(self) -> str:
        return _SYMBOL[self]


_ORDER = {Action.CREATE: 0, Action.UPDATE: 1, Action.DELETE: 2, Action.NOOP: 3}
_SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-", Action.NOOP: " "}


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldChange:
    """One changed field: `path` like `command.cmd` or `schedules.nightly.cron`."""

    path: str
    action: Action
    old: Any = None
    new: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileChange:
    """A changed snapshot file (SQL/Python) of a job, with its unified diff."""

    path: str
    action: Action
    diff: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleChange:
    id: str
    action: Action
    cron: str | None
    timezone: str | None
    next_fire_times: tuple[datetime, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class JobChange:
    job_id: JobId
    action: Action
    path: str | None
    fields: tuple[FieldChange, ...] = ()
    files: tuple[FileChange, ...] = ()
    schedules: tuple[ScheduleChange, ...] = ()

    def sort_key(self) -> tuple[int, str]:
        return (self.action.order, self.job_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedFileChange:
    """A saved query, profile or reusable schedule that differs from the applied one, and
    the jobs of the commit using it: their next runs change without a new job version."""

    path: str
    action: Action
    jobs: tuple[JobId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanBase:
    """What a plan was made against: the store's serial and applied commit, and main."""

    state_serial: int
    applied_commit: str | None
    main_tip: str | None
    drift: str | None = None
    """Why the store's applied rows are not what the last apply made, if they are not."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    ref: str
    commit: str
    base: PlanBase
    generated_at: datetime
    changes: tuple[JobChange, ...]
    unchanged: int
    warnings: tuple[Diagnostic, ...] = ()
    stats: dict[str, int] = field(default_factory=dict)
    affects: tuple[SharedFileChange, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def count(self, action: Action) -> int:
        if action is Action.NOOP:
            return self.unchanged
        return sum(1 for c in self.changes if c.action is action)

    def summary(self) -> dict[str, int]:
        return {a.value: self.count(a) for a in Action}
