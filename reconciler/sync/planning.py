"""Making a plan: desired jobs of a commit vs the jobs the store recorded.

Edge: reads git (through a snapshot) and the store (through a reader); the pairing,
diffing and rendering are the pure `reconciler.plan`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from reconciler.errors import DefinitionError, RepoError
from reconciler.ids import BlobSha, JobId
from reconciler.load.loader import is_yaml_input, load_jobs_repo
from reconciler.load.model import JobsRepo
from reconciler.load.reuse import KnownFile
from reconciler.plan.desired import DesiredJob, RecordedJob, desired_job, reused_desired_job
from reconciler.plan.diff import (
    diff_shared_files,
    is_shared_file,
    needs_definition,
    needs_desired_definition,
    pair_jobs,
    plan_changes,
)
from reconciler.plan.model import Plan, PlanBase, SharedFileChange
from reconciler.repo.branches import MainBranch, resolve_main
from reconciler.repo.snapshot import CommitSnapshot, open_commit
from reconciler.store.records import AppliedFile, AppliedJob, AppliedJobIndex, StoreState
from reconciler.sync.cache import ParseCache
from reconciler.sync.collector import collector_paused


class StoreReader(Protocol):
    """What planning reads of the store: the Store itself, or an apply transaction."""

    def read_state(self) -> StoreState: ...

    def read_job_index(self, *, include_deleted: bool = False) -> dict[JobId, AppliedJobIndex]: ...

    def read_jobs(
        self, ids: Collection[JobId] | None = None, *, include_deleted: bool = False
    ) -> dict[JobId, AppliedJob]: ...

    def read_files(self, paths: Collection[str] | None = None) -> dict[str, AppliedFile]: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    """A loaded, valid commit and its normalized jobs."""

    loaded: JobsRepo
    jobs: Mapping[JobId, DesiredJob]


def _known_files(
    snapshot: CommitSnapshot, reader: StoreReader | None, cache: ParseCache | None
) -> dict[str, KnownFile]:
    """What earlier loads recorded for files of this commit: the local cache (which also
    holds definitions), else the store's index (shared with every machine using the
    store). The store is asked only for the files the cache does not know."""
    blobs = {p: e.blob for p, e in snapshot.files().items() if is_yaml_input(p)}
    known = cache.lookup(blobs) if cache is not None else {}
    missing = [p for p in blobs if p not in known]
    if reader is not None and missing:
        for path, applied in reader.read_files(missing).items():
            if applied.parsed is not None and blobs[path] == applied.blob:
                known[path] = KnownFile(blob=applied.blob, document=applied.parsed)
    return known


def load_desired(
    snapshot: CommitSnapshot,
    *,
    reader: StoreReader | None = None,
    cache: ParseCache | None = None,
    parse: Collection[str] = (),
) -> Desired:
    """Load a commit, parsing only files whose recorded facts no longer hold (and the
    job files in `parse`); raise DefinitionError with every error when it is invalid."""
    known = {p: k for p, k in _known_files(snapshot, reader, cache).items() if p not in parse}
    loaded = load_jobs_repo(
        snapshot,
        label=snapshot.label,
        commit=snapshot.commit,
        known=known,
        definitions_in_facts=True,
    )
    if loaded.errors:
        raise DefinitionError(loaded.errors)
    if cache is not None:
        cache.save(loaded.documents, {p: e.blob for p, e in snapshot.files().items()})
    jobs = {i: desired_job(j) for i, j in loaded.jobs.items()}
    jobs.update({i: reused_desired_job(j) for i, j in loaded.reused.items()})
    return Desired(loaded=loaded, jobs=jobs)


def try_resolve_main(repo: Path) -> MainBranch | None:
    try:
        return resolve_main(repo)
    except RepoError:
        return None


def plan_against(
    snapshot: CommitSnapshot,
    desired: Desired,
    reader: StoreReader,
    *,
    main: MainBranch | None,
    now: datetime,
    cache: ParseCache | None = None,
) -> Plan:
    """The plan that would make the store's jobs equal `desired`."""
    state = reader.read_state()
    index = reader.read_job_index()
    recorded = {
        i: RecordedJob(
            job_id=i, version=x.version, content_hash=x.content_hash, input_blobs=x.input_blobs
        )
        for i, x in index.items()
    }
    lacking = {
        want.path
        for _, want, have in pair_jobs(desired.jobs, recorded)
        if want is not None and want.definition is None and needs_desired_definition(want, have)
    }
    if lacking:
        desired = load_desired(snapshot, reader=reader, cache=cache, parse=lacking)
    wanted = [
        i
        for i, want, have in pair_jobs(desired.jobs, recorded)
        if needs_definition(want, have) or (want is None and have is not None)
    ]
    if wanted:
        for i, job in reader.read_jobs(wanted).items():
            recorded[i] = RecordedJob(
                job_id=i,
                version=job.version,
                content_hash=job.content_hash,
                input_blobs=job.input_blobs,
                definition=job.definition,
            )
    file_texts = _changed_file_texts(snapshot, desired.jobs, recorded)
    assert snapshot.commit is not None
    plan = plan_changes(
        desired.jobs,
        recorded,
        ref=snapshot.label,
        commit=snapshot.commit,
        base=PlanBase(
            state_serial=state.serial,
            applied_commit=state.commit,
            main_tip=main.tip if main is not None else None,
        ),
        now=now,
        file_texts=file_texts,
        warnings=desired.loaded.warnings,
        stats={"filesParsed": desired.loaded.files_parsed, "jobs": len(desired.jobs)},
    )
    if state.serial == 0:
        return plan  # nothing applied yet: every shared file is new, and so is every job
    return replace(plan, affects=_shared_changes(snapshot, desired.loaded, reader))


def _shared_changes(
    snapshot: CommitSnapshot, loaded: JobsRepo, reader: StoreReader
) -> tuple[SharedFileChange, ...]:
    """Saved queries, profiles and reusable schedules that differ from the applied ones
    (the store's file index), with the jobs of the commit using each. Asks the store only
    for the commit's shared files and the profiles its jobs resolve to (a deleted
    profiles/default.yaml changes the jobs falling back to the built-in default)."""
    uses: dict[str, set[JobId]] = {}
    jobs = [(j.id, j.depends_on, j.profile) for j in loaded.jobs.values()]
    jobs += [(j.id, j.depends_on, j.profile) for j in loaded.reused.values()]
    for job_id, depends_on, profile in jobs:
        for path in {*depends_on, f"profiles/{profile}.yaml"}:
            uses.setdefault(path, set()).add(job_id)
    current = {p: e.blob for p, e in snapshot.files().items() if is_shared_file(p)}
    applied = {p: f.blob for p, f in reader.read_files({*current, *uses}).items()}
    wanted = {p for p in {*current, *uses} if is_shared_file(p)}
    return diff_shared_files(
        {p: b for p, b in applied.items() if p in wanted},
        current,
        uses,
    )


def _changed_file_texts(
    snapshot: CommitSnapshot,
    desired: Mapping[JobId, DesiredJob],
    recorded: Mapping[JobId, RecordedJob],
) -> dict[str, bytes]:
    """Contents of snapshot files whose blob differs between the two sides."""
    blobs: set[str] = set()
    for job_id, want, have in pair_jobs(desired, recorded):
        if want is None:
            continue
        old = dict(have.input_blobs) if have is not None else {}
        for path, blob in want.input_blobs.items():
            if path != want.path and old.get(path) != blob:
                blobs.add(blob)
                if path in old:
                    blobs.add(old[path])
        del job_id
    if not blobs:
        return {}
    wanted = [BlobSha(b) for b in sorted(blobs)]
    try:
        return {str(b): text for b, text in snapshot.blobs.read(wanted).items()}  # one request
    except RepoError:
        pass  # some old blob is no longer in this clone: read one by one, skipping it
    out: dict[str, bytes] = {}
    for blob in wanted:
        try:
            out[blob] = snapshot.blobs.read([blob])[blob]
        except RepoError:
            continue  # an old blob no longer in this clone: the diff says so
    return out


def make_plan(repo: Path, reader: StoreReader, *, ref: str | None, now: datetime) -> Plan:
    """Load `ref` (default HEAD) and plan it against the store."""
    cache = ParseCache.for_repo(repo)
    try:
        with collector_paused(), open_commit(repo, ref or "HEAD") as snapshot:
            desired = load_desired(snapshot, reader=reader, cache=cache)
            return plan_against(
                snapshot, desired, reader, main=try_resolve_main(repo), now=now, cache=cache
            )
    finally:
        cache.close()
