"""What loading one version of a jobs repo yields: resolved jobs and every diagnostic.

Pure values: frozen dataclasses over the spec models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reconciler.ids import JobId, ScheduleId
from reconciler.load.diagnostic import Diagnostic, Severity
from reconciler.spec.job import JobSpec
from reconciler.spec.profile import ProfileSpec
from reconciler.spec.schedule import ConcurrencyPolicy, ReusableScheduleSpec
from reconciler.spec.settings import RepoSettings
from reconciler.spec.teams import TeamsSpec

if TYPE_CHECKING:
    from reconciler.load.reuse import ReusedJob


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedSchedule:
    """A schedule of a job with its defaults filled in; `source` is "inline" or the file used."""

    id: ScheduleId
    cron: str
    timezone: str
    starting_deadline_seconds: int | None
    concurrency_policy: ConcurrencyPolicy
    enabled: bool
    source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "cron": self.cron,
            "timezone": self.timezone,
            "startingDeadlineSeconds": self.starting_deadline_seconds,
            "concurrencyPolicy": self.concurrency_policy.value,
            "enabled": self.enabled,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedJob:
    """A valid job of one version: its spec, resolved schedules, profile and inputs."""

    id: JobId
    path: str
    spec: JobSpec
    schedules: tuple[ResolvedSchedule, ...]
    profile: str
    catalog: str | None
    timeout_seconds: int
    version_inputs: Mapping[str, str]
    """The job's YAML and snapshot files (`sql.file`, `python.file`) -> blob SHA."""
    depends_on: tuple[str, ...]
    """Shared files resolved at dispatch or load: saved query, profile, reusable schedules."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsRepo:
    """One version of the jobs repo, loaded and checked."""

    label: str
    commit: str | None
    settings: RepoSettings
    teams: TeamsSpec | None
    profiles: Mapping[str, ProfileSpec]
    schedules: Mapping[str, ReusableScheduleSpec]
    queries: frozenset[str]
    jobs: Mapping[JobId, LoadedJob]
    diagnostics: tuple[Diagnostic, ...]
    reused: Mapping[JobId, ReusedJob] = field(default_factory=dict)
    """Jobs not parsed because an earlier load's facts still hold (see load.reuse)."""
    documents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per parsed valid file: its validated document (shared files) or facts (jobs)."""
    files_parsed: int = 0
    blobs: Mapping[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity is Severity.WARNING)

    @property
    def ok(self) -> bool:
        return not self.errors
