"""Applying the ownership rules to real versions: a change between two commits, a
version's CODEOWNERS, and a user's right to operate a job's runs.

Edge: reads git (commit snapshots, merge-base) and the store (the applied definition and
teams.yaml); the rules themselves are `reconciler.ownership.rules`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from reconciler.errors import PermissionDenied
from reconciler.ids import CommitSha, JobId
from reconciler.ownership.rules import (
    TEAMS_PATH,
    Change,
    VersionOwnership,
    Violation,
    check_changes,
    diff_listings,
    may_operate_runs,
    needs_content,
    read_ownership,
    run_refusal,
)
from reconciler.repo.git import query_git
from reconciler.repo.snapshot import CommitSnapshot, open_commit
from reconciler.spec.ids import job_id_for_path
from reconciler.spec.teams import TeamsSpec

if TYPE_CHECKING:
    from reconciler.store.records import AppliedFile, AppliedJob, StoreState


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnershipReport:
    """The verdict on what `author` changes between `base` and `head`."""

    base: CommitSha
    base_label: str
    head: CommitSha
    head_label: str
    merge_base: CommitSha
    author: str
    admin: bool
    teams_file: bool
    """Whether base has a teams.yaml (without one every user is an org admin)."""
    changes: Mapping[str, Change]
    violations: tuple[Violation, ...]

    @property
    def allowed(self) -> bool:
        return not self.violations


def load_ownership(snapshot: CommitSnapshot) -> VersionOwnership:
    """The owners of one commit (reads its job YAML, profiles, teams.yaml, settings)."""
    files = snapshot.files()
    contents = snapshot.read(p for p, e in files.items() if needs_content(p, e))
    return read_ownership(files, contents)


def check_ownership(repo: Path, *, base: str, head: str, author: str) -> OwnershipReport:
    """Judge what `head` changes since its merge-base with `base` (what `git diff
    base...head` shows) against the owners and teams of `base`.

    Raises RepoError for an unknown ref, PermissionDenied for an unreadable teams.yaml.
    """
    with open_commit(repo, base) as base_snap, open_commit(repo, head) as head_snap:
        assert base_snap.commit is not None
        assert head_snap.commit is not None
        found = query_git(repo, "merge-base", base_snap.commit, head_snap.commit)
        fork = CommitSha(found.strip()) if found and found.strip() else base_snap.commit
        if fork == base_snap.commit:
            changes = diff_listings(base_snap.files(), head_snap.files())
        else:
            with open_commit(repo, fork) as fork_snap:
                changes = diff_listings(fork_snap.files(), head_snap.files())
        base_owners = load_ownership(base_snap)
        head_owners = load_ownership(head_snap)
        violations = check_changes(changes, base=base_owners, head=head_owners, author=author)
        return OwnershipReport(
            base=base_snap.commit,
            base_label=base_snap.label,
            head=head_snap.commit,
            head_label=head_snap.label,
            merge_base=fork,
            author=author,
            admin=base_owners.is_admin(author),
            teams_file=base_owners.teams is not None,
            changes=changes,
            violations=violations,
        )


def ownership_at(repo: Path, ref: str) -> tuple[str, VersionOwnership]:
    """The label and owners of `ref` (for `codeowners`)."""
    with open_commit(repo, ref) as snapshot:
        return snapshot.label, load_ownership(snapshot)


# -- runs --------------------------------------------------------------------------------


class _AppliedReader(Protocol):
    def read_state(self) -> StoreState: ...

    def read_jobs(
        self, ids: Collection[JobId] | None = None, *, include_deleted: bool = False
    ) -> dict[JobId, AppliedJob]: ...

    def read_files(self, paths: Collection[str] | None = None) -> dict[str, AppliedFile]: ...


class RunAccessSource(Protocol):
    """What the run commands hold: the repo, the store and its runs (the Runner)."""

    repo: Path

    @property
    def store(self) -> Any: ...

    @property
    def runs(self) -> Any: ...


def require_run_access(
    runner: RunAccessSource,
    job_id: str,
    user: str,
    *,
    what: str,
    ref: str | None = None,
    run_id: str | None = None,
) -> None:
    """Raise PermissionDenied unless `user` may `what` (e.g. "run") job `job_id`.

    The job's `team`/`sharedWith` come from its live (applied) definition, else (a job
    never applied) from the run concerned or its newest run; with `ref`, from the draft
    at `ref`. Membership comes from teams.yaml as applied: a branch cannot grant itself
    membership (before the first apply, the draft's own teams.yaml counts).
    """
    store: _AppliedReader = runner.store
    if ref is not None:
        draft = _draft_owner(runner.repo, ref, job_id)
        if draft is None:
            return  # no such job in the draft: the command itself reports that
        team, shared, draft_teams = draft
        teams = _applied_teams(store) if store.read_state().serial > 0 else draft_teams
    else:
        owner = _live_owner(store, runner.runs, JobId(job_id), run_id)
        if owner is None:
            return  # nothing known of this job: the command itself reports that
        team, shared = owner
        teams = _applied_teams(store)
    if not may_operate_runs(user, team=team, shared_with=shared, teams=teams):
        raise PermissionDenied(run_refusal(user, job_id, team=team, shared_with=shared, what=what))


def _owner_of(definition: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    team = definition.get("team")
    shared = definition.get("sharedWith") or []
    return (team if isinstance(team, str) else None), tuple(str(t) for t in shared)


def _live_owner(
    store: _AppliedReader, runs: Any, job_id: JobId, run_id: str | None
) -> tuple[str | None, tuple[str, ...]] | None:
    applied = store.read_jobs([job_id], include_deleted=True).get(job_id)
    if applied is not None:
        return _owner_of(applied.definition)
    run = runs.get(run_id) if run_id is not None else None
    if run is None or run.job_id != job_id:
        page, _ = runs.list_runs([job_id], include_drafts=True, max_results=1)
        run = page[0] if page else None
    if run is None:
        return None
    return _owner_of(run.details.get("definition") or {})


def _applied_teams(store: _AppliedReader) -> TeamsSpec | None:
    row = store.read_files([TEAMS_PATH]).get(TEAMS_PATH)
    if row is None:
        return None
    try:
        return TeamsSpec.model_validate(row.parsed if row.parsed is not None else {})
    except ValidationError:
        raise PermissionDenied(f"{TEAMS_PATH} as applied cannot be read") from None


def _draft_owner(
    repo: Path, ref: str, job_id: str
) -> tuple[str | None, tuple[str, ...], TeamsSpec | None] | None:
    path = "jobs/" + job_id.replace(".", "/") + ".yaml"
    with open_commit(repo, ref) as snapshot:
        files = snapshot.files()
        wanted = [p for p in (path, TEAMS_PATH) if p in files]
        contents = snapshot.read(wanted)
        if path not in files or job_id_for_path(path) != job_id:
            return None
        owners = read_ownership({p: files[p] for p in wanted}, contents)
    job = owners.jobs[path]
    return job.team, job.shared_with, owners.teams
