"""Origin drift: SQL snapshot files whose declared origin now holds different text.

Invariants: only SQL snapshots with ``origin`` are checked (``sql`` and
``streaming.sql`` jobs with ``file`` + ``origin``). A same-repo origin (``origin.path``,
relative to the repo root) is read at the same commit as the snapshot. Another repo's
origin (``origin.repo`` URL, ``ref`` (default: its HEAD), ``path``) is read from a bare,
blob-less clone kept in ``<repo>/.reconciler/origins/<hash of URL>``, fetched (branches
and tags) once per URL per check, read only and never checked out or executed; git may
use only the file, git, ssh, http and https transports for it. An origin that cannot
be read (unreachable repo, unknown ref, missing path) is an error entry, never an
exception. Entries are sorted by job id, then snapshot path.

Exit status (`DriftReport.exit_code`): 1 when origins exist and none could be read;
else 2 with ``--detailed-exitcode`` when something drifted; else 0. Some unreadable
origins next to readable ones are reported as error entries without changing it.

Pure: `diff_snapshot`, `origin_cache_name`, `DriftReport`. Edge: `load_drift`,
`fetch_origin`. Does not touch the state store.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from reconciler.errors import RepoError
from reconciler.ids import CommitSha, JobId
from reconciler.load.loader import load_jobs_repo
from reconciler.load.model import LoadedJob
from reconciler.repo.git import check_ref, query_git, run_git
from reconciler.repo.snapshot import STATE_DIR, CommitSnapshot, open_commit
from reconciler.spec.job import SqlSource

ORIGINS_DIR = "origins"
_PROTOCOLS = {"GIT_ALLOW_PROTOCOL": "file:git:ssh:http:https"}


class DriftStatus(StrEnum):
    IN_SYNC = "in-sync"
    DRIFTED = "drifted"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginRef:
    """Where a snapshot came from: `repo` None means this repo."""

    path: str
    repo: str | None = None
    ref: str | None = None

    def render(self) -> str:
        if self.repo is None:
            return self.path
        return f"{self.repo}@{self.ref or 'HEAD'}:{self.path}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftEntry:
    """One checked snapshot."""

    job_id: JobId
    snapshot: str
    """Repo path of the snapshot file."""
    origin: OriginRef
    status: DriftStatus
    origin_commit: str | None = None
    diff: str = ""
    """Unified diff from the snapshot (a/) to the origin (b/); empty unless drifted."""
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftReport:
    """Every snapshot with an origin at one commit, checked."""

    label: str
    commit: CommitSha
    entries: tuple[DriftEntry, ...] = field(default_factory=tuple)

    def count(self, status: DriftStatus) -> int:
        return sum(1 for e in self.entries if e.status is status)

    def exit_code(self, *, detailed: bool) -> int:
        """See the module invariants."""
        if self.entries and self.count(DriftStatus.ERROR) == len(self.entries):
            return 1
        if detailed and self.count(DriftStatus.DRIFTED):
            return 2
        return 0


def diff_snapshot(snapshot_path: str, snapshot: bytes, origin_label: str, origin: bytes) -> str:
    """The unified diff that would make `snapshot` equal `origin` ('' when equal)."""
    if snapshot == origin:
        return ""
    old = snapshot.decode("utf-8", "replace").splitlines(keepends=True)
    new = origin.decode("utf-8", "replace").splitlines(keepends=True)
    text = "".join(
        difflib.unified_diff(old, new, fromfile=f"a/{snapshot_path}", tofile=f"b/{origin_label}")
    )
    if not text:  # differs only in bytes that decode alike
        return f"Binary content of {snapshot_path} and {origin_label} differs\n"
    return text if text.endswith("\n") else text + "\n"


def origin_cache_name(url: str) -> str:
    """The directory name of the clone of `url` under ``.reconciler/origins/``."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def _sql_sources(job: LoadedJob) -> Iterator[SqlSource]:
    if job.spec.sql is not None:
        yield job.spec.sql
    if job.spec.streaming is not None and job.spec.streaming.sql is not None:
        yield job.spec.streaming.sql


def _snapshot_path(job: LoadedJob, file: str) -> str:
    lexical = posixpath.normpath(posixpath.join(posixpath.dirname(job.path), file))
    if lexical in job.version_inputs:
        return lexical
    others = [p for p in job.version_inputs if p != job.path]
    return others[0] if len(others) == 1 else lexical


# --- edge ----------------------------------------------------------------------------------


def fetch_origin(repo: Path, url: str) -> Path:
    """Clone (first time) or fetch the origin repo `url` into its cache and return the
    cache's path. Raises `RepoError` when the URL cannot be fetched."""
    if not url or url.startswith("-"):
        raise RepoError(f"origin repo {url!r} is not a URL")
    root = repo / STATE_DIR / ORIGINS_DIR
    cache = root / origin_cache_name(url)
    if not cache.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="clone-", dir=root))
        try:
            run_git(
                root,
                "clone",
                "--quiet",
                "--bare",
                "--no-tags",
                "--filter=blob:none",
                "--",
                url,
                str(tmp / "git"),
                env=_PROTOCOLS,
            )
            with contextlib.suppress(OSError):  # another process cloned it first
                os.rename(tmp / "git", cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    run_git(
        cache,
        "fetch",
        "--quiet",
        "--prune",
        "--force",
        "origin",
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
        env=_PROTOCOLS,
    )
    return cache


def _read_other(cache: Path, origin: OriginRef) -> tuple[CommitSha, bytes]:
    ref = check_ref(origin.ref or "HEAD")
    out = query_git(cache, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not out:
        raise RepoError(f"ref {ref!r} not found in {origin.repo}")
    sha = CommitSha(out.strip())
    kind = query_git(cache, "cat-file", "-t", f"{sha}:{origin.path}", env=_PROTOCOLS)
    if kind is None or kind.strip() != "blob":
        raise RepoError(f"{origin.path} does not exist at {ref} ({sha[:12]}) of {origin.repo}")
    data = run_git(cache, "cat-file", "blob", f"{sha}:{origin.path}", env=_PROTOCOLS)
    return sha, data.encode("utf-8", "surrogateescape")


def _origin_cache(repo: Path, url: str, caches: dict[str, Path | RepoError]) -> Path:
    """The fetched clone of `url`, fetched once per check; raises its `RepoError` again."""
    if url not in caches:
        try:
            caches[url] = fetch_origin(repo, url)
        except RepoError as exc:
            caches[url] = exc
    cached = caches[url]
    if isinstance(cached, RepoError):
        raise cached
    return cached


def _read_origin(
    repo: Path, snap: CommitSnapshot, origin: OriginRef, caches: dict[str, Path | RepoError]
) -> tuple[str, str, bytes]:
    """(commit, label, content) of `origin`; raises `RepoError` when it cannot be read."""
    if origin.repo is not None:
        commit, text = _read_other(_origin_cache(repo, origin.repo, caches), origin)
        return commit, origin.path, text
    path = posixpath.normpath(origin.path)
    if path not in snap.files():
        raise RepoError(f"{path} does not exist at {snap.label}")
    return snap.commit or "", path, snap.read([path])[path]


def _check(
    repo: Path,
    snap: CommitSnapshot,
    job: LoadedJob,
    file: str,
    origin: OriginRef,
    caches: dict[str, Path | RepoError],
) -> DriftEntry:
    path = _snapshot_path(job, file)
    base = DriftEntry(job_id=job.id, snapshot=path, origin=origin, status=DriftStatus.ERROR)
    try:
        current = snap.read([path])[path]
        commit, label, text = _read_origin(repo, snap, origin, caches)
    except RepoError as exc:
        return replace(base, error=str(exc))
    diff = diff_snapshot(path, current, label, text)
    status = DriftStatus.DRIFTED if diff else DriftStatus.IN_SYNC
    return replace(base, status=status, origin_commit=commit, diff=diff)


def load_drift(repo: Path, ref: str) -> DriftReport:
    """Check every snapshot with an origin of the jobs at `ref` (jobs that do not load
    are skipped). Raises `RepoError` when `ref` names no commit."""
    with open_commit(repo, ref) as snap:
        loaded = load_jobs_repo(snap, label=snap.label, commit=snap.commit)
        caches: dict[str, Path | RepoError] = {}
        entries = [
            _check(
                repo,
                snap,
                job,
                sql.file,
                OriginRef(path=sql.origin.path, repo=sql.origin.repo, ref=sql.origin.ref),
                caches,
            )
            for _, job in sorted(loaded.jobs.items())
            for sql in _sql_sources(job)
            if sql.origin is not None and sql.file is not None
        ]
        assert snap.commit is not None
        entries.sort(key=lambda e: (e.job_id, e.snapshot))
        return DriftReport(label=snap.label, commit=snap.commit, entries=tuple(entries))
