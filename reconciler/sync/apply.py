"""Applying the tip of main (or exactly a saved plan) to the store, in one transaction.

Invariants: everything an apply writes is one transaction, which is also the lock: a
second apply waits for it, and a holder that dies releases it at once. A draft (a
commit not on main's first-parent history) is never applied. A saved plan is applied
only against the state serial and main tip it was made against. A commit older than
the applied one needs `allow_older`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.errors import RepoError, StalePlan, StateError
from reconciler.ids import CommitSha, JobId
from reconciler.plan.desired import DesiredJob
from reconciler.plan.model import Action, Plan
from reconciler.plan.render import plan_to_json
from reconciler.repo.branches import MainBranch, is_ancestor, is_on_main, resolve_main
from reconciler.repo.history import last_changes, read_commit
from reconciler.repo.snapshot import CommitSnapshot, open_commit
from reconciler.store import AppliedFile, AppliedJob, ApplyRecord, Store
from reconciler.sync.cache import ParseCache
from reconciler.sync.collector import collector_paused
from reconciler.sync.planning import load_desired, plan_against


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedPlanRef:
    """What a saved plan was made against."""

    commit: CommitSha
    main_tip: CommitSha | None
    state_serial: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyOutcome:
    plan: Plan
    record: ApplyRecord | None
    """None when there was nothing to apply."""


Confirm = Callable[[Plan], bool]
Fence = Callable[[Any], None]


def apply_main(
    repo: Path,
    store: Store,
    *,
    user: str,
    now: datetime,
    lock_timeout: float,
    allow_older: bool = False,
    saved: SavedPlanRef | None = None,
    confirm: Confirm | None = None,
    fence: Fence | None = None,
    heal: bool = False,
) -> ApplyOutcome:
    """Apply the tip of main (or the saved plan's commit) and return what was done.

    `confirm` is shown the plan before anything is written and may decline (StateError).
    `fence` runs inside the transaction just before it commits (serve's lease check:
    it raises LeaseLost to abandon the apply). `heal` rewrites every job's row, versions
    recomputed, even when the plan is empty (serve repairing drift).
    Raises DefinitionError for an invalid commit, StalePlan when a saved or confirmed
    plan no longer matches, StateError for drafts and older commits, StoreError when
    the lock cannot be taken within `lock_timeout`.
    """
    main = resolve_main(repo)
    commit = _target_commit(repo, main, saved)
    cache = ParseCache.for_repo(repo)
    with collector_paused(), open_commit(repo, commit) as snapshot, closing(cache):
        label = f"{main.tip_ref} ({commit[:7]})" if commit == main.tip else snapshot.label
        snapshot.label = label
        desired = load_desired(snapshot, reader=store, cache=cache)
        shown: Plan | None = None
        if confirm is not None:
            shown = plan_against(snapshot, desired, store, main=main, now=now, cache=cache)
            if not confirm(shown):
                raise StateError("apply cancelled; nothing was changed")
        with store.apply_transaction(holder=user, lock_timeout=lock_timeout) as tx:
            state = tx.read_state()
            if saved is not None and state.serial != saved.state_serial:
                raise StalePlan(
                    f"the saved plan was made against state serial {saved.state_serial}, but the "
                    f"store is now at serial {state.serial}: make a new plan"
                )
            if shown is not None and state.serial != shown.base.state_serial:
                raise StalePlan(
                    f"the store moved from state serial {shown.base.state_serial} to "
                    f"{state.serial} while the plan was shown: run apply again"
                )
            older = (
                state.commit is not None
                and state.commit != commit
                and is_ancestor(repo, commit, state.commit)
            )
            if older and not allow_older:
                raise StateError(
                    f"{commit[:12]} is older than the applied commit {(state.commit or '')[:12]}; "
                    "apply it anyway with --allow-older (serve will then see drift)"
                )
            plan = plan_against(snapshot, desired, tx, main=main, now=now, cache=cache)
            if not plan.changes and state.commit == commit and not heal:
                return ApplyOutcome(plan=plan, record=None)
            changed = [
                desired.jobs[c.job_id]
                for c in plan.changes
                if c.action in (Action.CREATE, Action.UPDATE)
            ]
            if heal:
                changed = list(desired.jobs.values())
            versions = _versions_of(repo, commit, changed)
            # A job reused from facts changed only in its files: its definition is the
            # one recorded (equal content hash).
            recorded = tx.read_jobs([j.job_id for j in changed if j.definition is None])
            jobs = [
                _applied_job(
                    j,
                    j.definition if j.definition is not None else recorded[j.job_id].definition,
                    versions[j.job_id],
                    commit,
                    tx.next_serial,
                    now,
                )
                for j in changed
            ]
            tx.upsert_jobs(jobs)
            tx.mark_jobs_deleted([c.job_id for c in plan.changes if c.action is Action.DELETE], now)
            upserts, deletes = _file_index_changes(
                snapshot, tx.read_files(), desired.loaded.documents
            )
            tx.replace_files(upserts, deletes)
            author = read_commit(repo, commit)
            if fence is not None:
                fence(tx.connection)
            record = tx.finish(
                commit=commit,
                main_tip=main.tip,
                user=user,
                commit_author=f"{author.author_name} <{author.author_email}>",
                at=now,
                summary=plan.summary(),
                plan=plan_to_json(plan),
            )
    return ApplyOutcome(plan=plan, record=record)


def _target_commit(repo: Path, main: MainBranch, saved: SavedPlanRef | None) -> CommitSha:
    if saved is None:
        return main.tip
    if not is_on_main(repo, saved.commit, main):
        raise StateError(
            f"the saved plan is for {saved.commit[:12]}, which is not on {main.tip_ref} "
            "(a draft): merge it to main, plan again, then apply"
        )
    if saved.main_tip != main.tip:
        raise StalePlan(
            f"the saved plan was made when {main.tip_ref} was at "
            f"{(saved.main_tip or 'none')[:12]}, but it is now at {main.tip[:12]}: "
            "make a new plan"
        )
    return saved.commit


def _versions_of(repo: Path, commit: str, changed: list[DesiredJob]) -> dict[JobId, CommitSha]:
    """Per job: the newest first-parent commit that changed its inputs."""
    paths = {p for job in changed for p in job.input_blobs}
    if not paths:
        return {}
    last = last_changes(repo, commit, paths)
    out: dict[JobId, CommitSha] = {}
    for job in changed:
        candidates = {last[p] for p in job.input_blobs if p in last}
        if not candidates:
            raise RepoError(
                f"no commit on the first-parent history of {commit[:12]} changed {job.path}"
            )
        out[job.job_id] = _newest(repo, candidates)
    return out


def _newest(repo: Path, candidates: set[CommitSha]) -> CommitSha:
    newest = next(iter(candidates))
    for other in candidates:
        if other != newest and is_ancestor(repo, newest, other):
            newest = other
    return newest


def _applied_job(
    job: DesiredJob,
    definition: Mapping[str, Any],
    version: CommitSha,
    commit: CommitSha,
    serial: int,
    now: datetime,
) -> AppliedJob:
    return AppliedJob(
        job_id=job.job_id,
        version=version,
        commit=commit,
        content_hash=job.content_hash,
        input_blobs=dict(job.input_blobs),
        definition=dict(definition),
        applied_serial=serial,
        applied_at=now,
    )


def file_kind(path: str) -> str:
    if path == "reconciler.yaml":
        return "settings"
    if path == "teams.yaml":
        return "teams"
    for prefix, kind in (
        ("profiles/", "profile"),
        ("queries/", "query"),
        ("schedules/", "schedule"),
    ):
        if path.startswith(prefix):
            return kind
    if path.startswith("jobs/") and path.endswith(".yaml"):
        return "job"
    return "asset"


def _file_index_changes(
    snapshot: CommitSnapshot,
    applied: Mapping[str, AppliedFile],
    documents: Mapping[str, Mapping[str, Any]],
) -> tuple[list[AppliedFile], list[str]]:
    """Rows of the store's file index to write: changed blobs, and every file parsed
    this time with its document or facts (job facts without their definition, which
    applied_jobs holds)."""
    files = snapshot.files()
    upserts = []
    indexed: set[str] = set()
    for path, entry in files.items():
        kind = file_kind(path)
        if not _indexed(path, kind):
            continue
        indexed.add(path)
        document = documents.get(path)
        parsed = (
            None if document is None else {k: v for k, v in document.items() if k != "definition"}
        )
        old = applied.get(path)
        if old is not None and old.blob == entry.blob and (parsed is None or old.parsed == parsed):
            continue
        upserts.append(AppliedFile(path=path, blob=entry.blob, kind=kind, parsed=parsed))
    deletes = [p for p in applied if p not in indexed]
    return upserts, deletes


def _indexed(path: str, kind: str) -> bool:
    """Files the store indexes: every input of a definition (not docs, schemas, CI files)."""
    return kind != "asset" or path.startswith("jobs/")
