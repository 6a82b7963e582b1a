"""Drafts: branches other than main whose tree changes jobs, each with a plan summary.

Invariants: a draft is a local or remote-tracking branch that is not main (neither the
local main branch nor ``<remote>/<main>``; symbolic refs such as ``origin/HEAD`` are
never branches) and whose diff against its merge-base with main's tip touches a file
the loader reads for jobs (``jobs/``, ``queries/``, ``profiles/``, ``schedules/``,
``reconciler.yaml``, ``teams.yaml``). Its summary compares the jobs loaded at the
draft's head with the jobs loaded at that merge-base (what the draft itself changes,
as a pull request shows it), not with the applied state; a draft whose head does not
load lists its error count instead. Drafts are sorted local first, then by name.

Pure: `touches_jobs`, `plan_summary`. Edge (reads git, never writes): `load_drafts`.
Does not touch the state store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.ids import CommitSha, JobId
from reconciler.load.loader import load_jobs_repo
from reconciler.load.model import JobsRepo
from reconciler.plan.desired import desired_job
from reconciler.repo.branches import REMOTE, BranchRef, MainBranch
from reconciler.repo.git import query_git, run_git
from reconciler.repo.snapshot import open_commit

_JOB_DIRS = ("jobs/", "queries/", "profiles/", "schedules/")
_JOB_FILES = ("reconciler.yaml", "teams.yaml")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanSummary:
    """Which jobs a draft creates, updates and deletes, each sorted by id."""

    create: tuple[JobId, ...]
    update: tuple[JobId, ...]
    delete: tuple[JobId, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """One draft branch and what it changes."""

    name: str
    """``feature`` for a local branch, ``origin/feature`` for a remote-tracking one."""
    is_remote: bool
    head: CommitSha
    merge_base: CommitSha
    commits: int
    """Commits on the draft since the merge-base."""
    changed_files: tuple[str, ...]
    """Job-related files the draft changes, sorted."""
    summary: PlanSummary | None
    """None when the head does not load (see `errors`)."""
    errors: int
    """Definition errors at the draft's head."""


def touches_jobs(path: str) -> bool:
    """Whether the loader reads `path` for jobs (a job file, a file a job names, or a
    shared file)."""
    return path.startswith(_JOB_DIRS) or path in _JOB_FILES


def plan_summary(base: JobsRepo, head: JobsRepo) -> PlanSummary:
    """The jobs `head` creates, updates (definition or input files) and deletes relative
    to `base`. Jobs invalid on either side count as absent there."""
    old = {i: desired_job(j) for i, j in base.jobs.items()}
    new = {i: desired_job(j) for i, j in head.jobs.items()}
    create = sorted(set(new) - set(old))
    delete = sorted(set(old) - set(new))
    update = sorted(
        i
        for i in set(old) & set(new)
        if old[i].content_hash != new[i].content_hash
        or dict(old[i].input_blobs) != dict(new[i].input_blobs)
    )
    return PlanSummary(create=tuple(create), update=tuple(update), delete=tuple(delete))


def _is_main(branch: BranchRef, main: MainBranch) -> bool:
    if branch.is_remote:
        return branch.name == f"{REMOTE}/{main.name}" or branch.name == main.tip_ref
    return branch.name == main.name


def _load(repo: Path, commit: str, cache: dict[str, JobsRepo]) -> JobsRepo:
    if commit not in cache:
        with open_commit(repo, commit) as snapshot:
            cache[commit] = load_jobs_repo(snapshot, label=snapshot.label, commit=snapshot.commit)
    return cache[commit]


def load_drafts(
    repo: Path, main: MainBranch, branches: list[BranchRef], *, cache: dict[str, JobsRepo]
) -> list[Draft]:
    """Return the drafts among `branches` (see the module invariants), in their order.

    `cache` holds loaded commits by SHA and is filled as commits are loaded (drafts
    often share a merge-base). Raises `RepoError` when git fails.
    """
    drafts: list[Draft] = []
    for branch in branches:
        if _is_main(branch, main):
            continue
        base_out = query_git(repo, "merge-base", main.tip, branch.sha)
        if base_out is None:
            continue  # no history in common with main: not a draft of this repo
        base = CommitSha(base_out.strip())
        if base == branch.sha:
            continue
        diff = run_git(repo, "diff", "--name-only", "--no-renames", "-z", base, branch.sha, "--")
        changed = tuple(sorted(p for p in diff.split("\0") if p and touches_jobs(p)))
        if not changed:
            continue
        count = run_git(repo, "rev-list", "--count", f"{base}..{branch.sha}").strip()
        head = _load(repo, branch.sha, cache)
        summary = plan_summary(_load(repo, base, cache), head) if head.ok else None
        drafts.append(
            Draft(
                name=branch.name,
                is_remote=branch.is_remote,
                head=branch.sha,
                merge_base=base,
                commits=int(count),
                changed_files=changed,
                summary=summary,
                errors=len(head.errors),
            )
        )
    return drafts


def render_draft_json(draft: Draft) -> Mapping[str, object]:
    """The documented JSON shape of one draft in `reconciler drafts --output json`."""
    summary = draft.summary
    return {
        "branch": draft.name,
        "remote": draft.is_remote,
        "head": draft.head,
        "mergeBase": draft.merge_base,
        "commits": draft.commits,
        "changedFiles": list(draft.changed_files),
        "valid": summary is not None,
        "errors": draft.errors,
        "plan": None
        if summary is None
        else {
            "create": list(summary.create),
            "update": list(summary.update),
            "delete": list(summary.delete),
        },
    }
