"""The versions of one job: the main commits (first-parent) that changed its inputs.

Invariants (DESIGN.md "Versions"): a job's inputs at a commit are its YAML file and the
snapshot files that YAML names (``sql.file``, ``python.file``, ``streaming.sql.file``,
resolved lexically relative to the YAML); a commit C on the first-parent history of the
tip is a version when the job's YAML exists after C and C changed the YAML or one of
the inputs in force at C. A moved YAML file keeps its history (renames are found as
``git log --follow`` finds them); each version carries the path, and so the id, the job
had then. Versions are listed newest first. The newest version is the one ``apply``
records (``git log --first-parent -1 -- <inputs>``).

Pure: `job_path`, `parse_snapshot_paths`, `pick_versions`, `match_versions`,
`diff_versions`. Edge (reads git, never writes): the `load_*` functions and
`resolve_version`.
Does not load or validate definitions (`reconciler.load` does).
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from reconciler.errors import DefinitionError, RepoError, UsageError
from reconciler.ids import BlobSha, CommitSha, JobId
from reconciler.load.loader import load_jobs_repo
from reconciler.load.model import JobsRepo, LoadedJob
from reconciler.plan.diff import diff_definitions
from reconciler.plan.model import Action, FieldChange, FileChange
from reconciler.repo.blobs import BlobReader
from reconciler.repo.git import check_ref, resolve_commit, run_git
from reconciler.repo.history import CommitInfo, log_paths
from reconciler.repo.snapshot import open_commit
from reconciler.spec.ids import job_id_for_path

RESTORES = "Restores"
"""The trailer a rollback commit carries: ``Restores: JOB@VERSION``."""

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MARK = "\x01"
_ZERO = "0" * 40
_LITERAL_PATHS = {"GIT_LITERAL_PATHSPECS": "1"}
_WALK = ("--no-show-signature", "--no-color", "--first-parent", "--diff-merges=first-parent")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileState:
    """A file of a commit's tree: its blob and mode."""

    blob: BlobSha
    mode: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeChange:
    """One path a commit changed (``git log --raw``); `after` is None when deleted."""

    path: str
    after: FileState | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitChanges:
    """The changes of one first-parent commit to the paths asked about."""

    sha: CommitSha
    changes: tuple[TreeChange, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PickedVersion:
    """A version found by `pick_versions`, before commit metadata is attached."""

    sha: CommitSha
    path: str
    """The job's YAML path at this version."""
    inputs: Mapping[str, FileState]
    """The job's inputs at this version (YAML and snapshot files) -> blob and mode."""
    changed: tuple[str, ...]
    """Which of the inputs (or the YAML path before a move) this commit changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobVersion:
    """One version of a job: the commit, with the job's path and inputs at it."""

    commit: CommitInfo
    job_id: JobId
    """The job's id at this version (differs from today's when the file was moved since)."""
    path: str
    inputs: Mapping[str, FileState]
    changed: tuple[str, ...]

    @property
    def sha(self) -> CommitSha:
        return self.commit.sha

    @property
    def restores(self) -> str | None:
        """``JOB@VERSION`` from the commit's ``Restores:`` trailer, if any."""
        return self.commit.trailers.get(RESTORES)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobHistory:
    """Every version of a job on the first-parent history of `tip`, newest first."""

    job_id: JobId
    path: str
    """The YAML path today's id stands for."""
    tip: CommitSha
    versions: tuple[JobVersion, ...]
    current: Mapping[str, FileState] = field(default_factory=dict)
    """The job's inputs at `tip`; empty when the job is deleted there."""

    @property
    def exists(self) -> bool:
        return bool(self.current)

    def find(self, sha: str) -> JobVersion | None:
        return next((v for v in self.versions if v.sha == sha), None)


def job_path(job_id: str) -> str:
    """The YAML file of job `a.b`: ``jobs/a/b.yaml``."""
    return "jobs/" + job_id.replace(".", "/") + ".yaml"


def _snapshot_refs(doc: Any) -> Iterator[Any]:
    if not isinstance(doc, dict):
        return
    for kind in ("sql", "python"):
        source = doc.get(kind)
        if isinstance(source, dict):
            yield source.get("file")
    streaming = doc.get("streaming")
    if isinstance(streaming, dict) and isinstance(streaming.get("sql"), dict):
        yield streaming["sql"].get("file")


def parse_snapshot_paths(yaml_path: str, data: bytes) -> tuple[str, ...]:
    """The repo paths of the snapshot files a job YAML names, resolved lexically
    relative to it; () for YAML that does not parse. Escaping paths are left out."""
    try:
        doc = yaml.load(data, Loader=_Loader)
    except yaml.YAMLError:
        return ()
    out: list[str] = []
    for ref in _snapshot_refs(doc):
        if not isinstance(ref, str) or not ref or ref.startswith("/"):
            continue
        path = posixpath.normpath(posixpath.join(posixpath.dirname(yaml_path), ref))
        if path != ".." and not path.startswith("../") and path not in out:
            out.append(path)
    return tuple(out)


def pick_versions(
    commits: Sequence[CommitChanges],
    yaml_steps: Mapping[CommitSha, str | None],
    snapshots: Mapping[CommitSha, tuple[str, ...]],
) -> tuple[list[PickedVersion], dict[str, FileState]]:
    """Walk `commits` (oldest first; every change to every path that was ever an input)
    and return the versions (oldest first) and the inputs after the last commit.

    `yaml_steps` maps each commit that changed the job's YAML (following moves) to its
    path after the commit (None: deleted); `snapshots` maps those commits to the
    snapshot paths the YAML named after them.
    """
    tree: dict[str, FileState] = {}
    yaml_now: str | None = None
    snaps_now: tuple[str, ...] = ()
    picked: list[PickedVersion] = []
    for commit in commits:
        for change in commit.changes:
            if change.after is None:
                tree.pop(change.path, None)
            else:
                tree[change.path] = change.after
        touched = {c.path for c in commit.changes}
        before = {yaml_now, *snaps_now} if yaml_now is not None else set()
        if commit.sha in yaml_steps:
            yaml_now = yaml_steps[commit.sha]
            snaps_now = snapshots.get(commit.sha, ()) if yaml_now is not None else ()
            is_version = yaml_now is not None
        else:
            is_version = yaml_now is not None and bool(touched & before)
        if not is_version or yaml_now is None:
            continue
        inputs = {p: tree[p] for p in (yaml_now, *snaps_now) if p in tree}
        changed = tuple(sorted(touched & (before | set(inputs))))
        picked.append(PickedVersion(sha=commit.sha, path=yaml_now, inputs=inputs, changed=changed))
    current: dict[str, FileState] = {}
    if yaml_now is not None:
        current = {p: tree[p] for p in (yaml_now, *snaps_now) if p in tree}
    return picked, current


def match_versions(
    versions: Iterable[JobVersion],
    *,
    grep: str | None = None,
    author: str | None = None,
    since: datetime | None = None,
    texts: Mapping[str, bytes] | None = None,
) -> list[JobVersion]:
    """The versions that pass every filter given, in the order given.

    `grep` matches (case-insensitively) the commit message or the text of any input at
    that version (`texts`: blob SHA -> content); `author` matches the author's name or
    email (case-insensitive substring); `since` keeps versions authored at or after it.
    """
    needle = grep.casefold() if grep else None
    who = author.casefold() if author else None
    out: list[JobVersion] = []
    for version in versions:
        info = version.commit
        if since is not None and info.authored_at < since:
            continue
        if who is not None and who not in f"{info.author_name} <{info.author_email}>".casefold():
            continue
        if needle is not None and not _mentions(version, needle, texts or {}):
            continue
        out.append(version)
    return out


def _mentions(version: JobVersion, needle: str, texts: Mapping[str, bytes]) -> bool:
    if needle in version.commit.message.casefold():
        return True
    for state in version.inputs.values():
        data = texts.get(state.blob)
        if data is not None and needle in data.decode("utf-8", "replace").casefold():
            return True
    return False


# --- edge: reading git ---------------------------------------------------------------------


def _raw_entries(out: str) -> list[tuple[CommitSha, list[tuple[str, str, FileState | None]]]]:
    """Parse ``git log --raw -z --format=<mark>%H`` into (sha, [(status, path, after)])
    per commit, newest first; for a rename the path is the new one."""
    commits: list[tuple[CommitSha, list[tuple[str, str, FileState | None]]]] = []
    tokens = iter(out.split("\0"))
    for raw in tokens:
        token = raw.lstrip("\n")
        if token.startswith(_MARK):
            commits.append((CommitSha(token[1:]), []))
            continue
        if not token.startswith(":") or not commits:
            continue
        _old_mode, new_mode, _old_blob, new_blob, status = token[1:].split(" ")
        path = next(tokens)
        if status[:1] in ("R", "C"):
            path = next(tokens)
        after = None if new_blob == _ZERO else FileState(blob=BlobSha(new_blob), mode=new_mode)
        commits[-1][1].append((status[:1], path, after))
    return commits


def load_job_ids(repo: Path, commit: str) -> list[JobId]:
    """Every job id at `commit`, sorted."""
    out = run_git(repo, "ls-tree", "-r", "-z", "--name-only", check_ref(commit), "--", "jobs")
    ids = {job_id_for_path(p) for p in out.split("\0") if p}
    return sorted(i for i in ids if i is not None)


def unknown_job(repo: Path, job_id: str, tip: str, where: str) -> UsageError:
    """The error for a job id that names no job, with a did-you-mean."""
    close = difflib.get_close_matches(job_id, load_job_ids(repo, tip), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return UsageError(f"no job {job_id!r} on {where}{hint}")


def load_job_history(repo: Path, job_id: str, *, tip: str, where: str = "main") -> JobHistory:
    """Return every version of `job_id` on the first-parent history of `tip`.

    Raises `UsageError` (with a did-you-mean) when no commit there ever had the job,
    `RepoError` when `tip` names no commit or git fails.
    """
    tip_sha = resolve_commit(repo, tip)
    path = job_path(job_id)
    followed = _raw_entries(
        run_git(
            repo,
            "log",
            *_WALK,
            "--follow",
            "--raw",
            "--no-abbrev",
            "-z",
            f"--format={_MARK}%H",
            tip_sha,
            "--",
            path,
            env=_LITERAL_PATHS,
        )
    )
    if not followed:
        raise unknown_job(repo, job_id, tip_sha, where)
    yaml_steps: dict[CommitSha, str | None] = {}
    yaml_blobs: dict[CommitSha, tuple[str, BlobSha]] = {}
    all_paths = {path}
    for sha, entries in followed:
        for status, entry_path, after in entries:
            all_paths.add(entry_path)
            yaml_steps[sha] = None if status == "D" or after is None else entry_path
            if after is not None and status != "D":
                yaml_blobs[sha] = (entry_path, after.blob)
    snapshots: dict[CommitSha, tuple[str, ...]] = {}
    with BlobReader(repo) as reader:
        contents = reader.read(blob for _, blob in yaml_blobs.values())
    for sha, (entry_path, blob) in yaml_blobs.items():
        snapshots[sha] = parse_snapshot_paths(entry_path, contents[blob])
        all_paths.update(snapshots[sha])
    # Renames appear as delete + add here, so every path walked is a plain path.
    walked = _raw_entries(
        run_git(
            repo,
            "log",
            *_WALK,
            "--no-renames",
            "--root",
            "--raw",
            "--no-abbrev",
            "-z",
            f"--format={_MARK}%H",
            tip_sha,
            "--",
            *sorted(all_paths),
            env=_LITERAL_PATHS,
        )
    )
    commits = [
        CommitChanges(
            sha=sha, changes=tuple(TreeChange(path=p, after=after) for _, p, after in entries)
        )
        for sha, entries in reversed(walked)
    ]
    picked, current = pick_versions(commits, yaml_steps, snapshots)
    infos = {c.sha: c for c in log_paths(repo, tip_sha, all_paths)} if picked else {}
    versions = tuple(
        JobVersion(
            commit=infos[p.sha],
            job_id=job_id_for_path(p.path) or JobId(job_id),
            path=p.path,
            inputs=p.inputs,
            changed=p.changed,
        )
        for p in reversed(picked)
    )
    return JobHistory(
        job_id=JobId(job_id), path=path, tip=tip_sha, versions=versions, current=current
    )


def load_former_ids(repo: Path, job_id: str, *, tip: str) -> list[JobId]:
    """The ids the job's file had before it was moved (``git log --follow`` on the
    first-parent history of `tip`) that name no job at `tip`, sorted; [] when the file
    was never moved."""
    out = run_git(
        repo,
        "log",
        *_WALK,
        "--follow",
        "--name-only",
        "-z",
        f"--format={_MARK}%H",
        check_ref(tip),
        "--",
        job_path(job_id),
        env=_LITERAL_PATHS,
    )
    paths = {t.lstrip("\n") for t in out.split("\0")} - {job_path(job_id)}
    paths = {p for p in paths if p and not p.startswith(_MARK)}
    if not paths:
        return []
    live = run_git(
        repo, "ls-tree", "-z", "--name-only", tip, "--", *sorted(paths), env=_LITERAL_PATHS
    )
    gone = paths - set(live.split("\0"))
    return sorted({i for i in map(job_id_for_path, gone) if i is not None and i != job_id})


def resolve_version(repo: Path, history: JobHistory, ref: str) -> JobVersion:
    """Return the version of `history` that `ref` (a SHA, its prefix or any revision)
    names.

    Raises `UsageError` naming the job's versions when `ref` names another commit or
    none.
    """
    try:
        sha = resolve_commit(repo, ref)
    except RepoError:
        sha = None
    version = history.find(sha) if sha is not None else None
    if version is not None:
        return version
    shown = ", ".join(v.sha[:12] for v in history.versions[:10])
    more = f" and {len(history.versions) - 10} more" if len(history.versions) > 10 else ""
    what = f"{ref!r} is not a commit" if sha is None else f"{sha[:12]} is not a version"
    return_hint = f"its versions are {shown}{more}" if shown else "it has no versions"
    raise UsageError(f"{what} of job {history.job_id}; {return_hint}")


def load_texts(repo: Path, versions: Iterable[JobVersion]) -> dict[str, bytes]:
    """The contents of every input of `versions`, by blob SHA."""
    blobs = {state.blob for v in versions for state in v.inputs.values()}
    if not blobs:
        return {}
    with BlobReader(repo) as reader:
        return {str(k): v for k, v in reader.read(sorted(blobs)).items()}


def load_restores(repo: Path, commits: Collection[str]) -> dict[str, str | None]:
    """Per commit SHA: the value of its ``Restores:`` trailer, or None (also for a
    commit this clone does not hold). One git process for all that exist."""
    wanted = sorted({c for c in commits if c})
    if not wanted:
        return {}
    checked = run_git(
        repo, "cat-file", "--batch-check", input="".join(f"{c}\n" for c in wanted).encode()
    )
    present = [
        fields[0]
        for fields in (line.split() for line in checked.splitlines())
        if len(fields) == 3 and fields[1] == "commit"
    ]
    out: dict[str, str | None] = dict.fromkeys(wanted)
    if not present:
        return out
    text = run_git(
        repo,
        "show",
        "-s",
        "--no-show-signature",
        f"--format=%H%x00%(trailers:key={RESTORES},valueonly,separator=%x1f)%x00",
        *present,
    )
    fields = text.split("\0")
    for i in range(0, len(fields) - 1, 2):
        sha = fields[i].strip()
        values = [v.strip() for v in fields[i + 1].split("\x1f") if v.strip()]
        if sha in out:
            out[sha] = values[-1] if values else None
    return out


# --- what changed between two versions -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionDiff:
    """Field-level changes of the normalized definition, and changed snapshot files."""

    fields: tuple[FieldChange, ...]
    files: tuple[FileChange, ...]

    @property
    def empty(self) -> bool:
        return not self.fields and not self.files


def _pair_files(old: Collection[str], new: Collection[str]) -> list[tuple[str | None, str | None]]:
    """Pairs of (old path, new path): same paths together, and a single file on each side
    that is left over as a move; the rest alone."""
    same = sorted(set(old) & set(new))
    gone = sorted(set(old) - set(new))
    came = sorted(set(new) - set(old))
    pairs: list[tuple[str | None, str | None]] = [(p, p) for p in same]
    if len(gone) == 1 and len(came) == 1:
        return sorted([*pairs, (gone[0], came[0])], key=lambda p: p[1] or p[0] or "")
    pairs += [(p, None) for p in gone] + [(None, p) for p in came]
    return sorted(pairs, key=lambda p: p[1] or p[0] or "")


def _file_change(
    old: str | None, new: str | None, before: bytes, after: bytes
) -> FileChange | None:
    if old == new and before == after:
        return None
    action = Action.CREATE if old is None else Action.DELETE if new is None else Action.UPDATE
    diff = "".join(
        difflib.unified_diff(
            before.decode("utf-8", "replace").splitlines(keepends=True),
            after.decode("utf-8", "replace").splitlines(keepends=True),
            fromfile="/dev/null" if old is None else f"a/{old}",
            tofile="/dev/null" if new is None else f"b/{new}",
        )
    )
    if not diff and old != new:
        diff = f"rename from {old}\nrename to {new}\n"
    if diff and not diff.endswith("\n"):
        diff += "\n"
    return FileChange(path=new or old or "", action=action, diff=diff)


def diff_versions(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_files: Mapping[str, bytes],
    new_files: Mapping[str, bytes],
) -> VersionDiff:
    """What changed from one version to another: `old`/`new` are normalized
    definitions, `*_files` the snapshot files (repo path -> content) of each side.
    Files are sorted by path (the new path of a moved file)."""
    changes: list[FileChange] = []
    for before, after in _pair_files(old_files, new_files):
        change = _file_change(
            before,
            after,
            old_files[before] if before is not None else b"",
            new_files[after] if after is not None else b"",
        )
        if change is not None:
            changes.append(change)
    return VersionDiff(fields=diff_definitions(old, new), files=tuple(changes))


def load_version_job(repo: Path, version: JobVersion) -> tuple[JobsRepo, LoadedJob]:
    """Load the repo at `version` and return it with the job as it was then.

    Raises `DefinitionError` with the job's own errors (or every error, when none is
    the job's) when the job does not load at that version.
    """
    with open_commit(repo, version.sha) as snapshot:
        loaded = load_jobs_repo(snapshot, label=snapshot.label, commit=snapshot.commit)
    job = loaded.jobs.get(version.job_id)
    if job is None:
        errors = [d for d in loaded.errors if d.location.path == version.path] or loaded.errors
        if not errors:
            raise UsageError(f"job {version.job_id} does not load at {version.sha[:12]}")
        raise DefinitionError(errors)
    return loaded, job


def load_snapshot_texts(repo: Path, version: JobVersion) -> dict[str, bytes]:
    """The snapshot files (inputs other than the YAML) of `version`: path -> content."""
    wanted = {p: s.blob for p, s in version.inputs.items() if p != version.path}
    if not wanted:
        return {}
    with BlobReader(repo) as reader:
        contents = reader.read(wanted.values())
    return {p: contents[b] for p, b in sorted(wanted.items())}
