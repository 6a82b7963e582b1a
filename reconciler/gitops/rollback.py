"""Rollback of one job: the commit that restores its files as of an earlier version.

Invariants: the commit's tree is its parent's tree with exactly the job's files changed:
each input of the version (its YAML and snapshot files, at the paths and with the
modes they had then) restored, and each file the job has now but did not have then
deleted. Its message is ``Roll back JOB to VERSION[:12]``, a blank line and the trailer
``Restores: JOB@<full VERSION>``. The commit is written with git plumbing in a
temporary index, so the user's index and working tree are never read or changed,
except with `on_main` when main is checked out: then the job's files there must be
clean, and they alone are brought up to date (``git read-tree -m -u``), keeping every
other uncommitted change. A branch is only ever created (never moved), and main only
moved forward from the tip it was read at (compare-and-swap in ``git update-ref``).

Pure: `plan_rollback`, `render_message`, `default_branch`. Edge: `write_rollback`.
Does not push and does not touch the state store.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import RepoError, UsageError
from reconciler.gitops.versions import (
    RESTORES,
    FileState,
    JobHistory,
    JobVersion,
    load_job_history,
    resolve_version,
)
from reconciler.ids import CommitSha
from reconciler.repo.branches import MainBranch
from reconciler.repo.git import query_git, run_git
from reconciler.repo.identity import commit_identity_env

_ZERO = "0" * 40


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackPlan:
    """The index updates a rollback makes: paths to write and paths to delete."""

    write: Mapping[str, FileState]
    delete: tuple[str, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted({*self.write, *self.delete}))


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollback:
    """A rollback commit that was written."""

    job_id: str
    version: CommitSha
    commit: CommitSha
    parent: CommitSha
    ref: str
    """The full ref it was written to: ``refs/heads/rollback/...`` or ``refs/heads/main``."""
    restored: tuple[str, ...]
    deleted: tuple[str, ...]


def plan_rollback(
    current: Mapping[str, FileState],
    target: Mapping[str, FileState],
    tree: Mapping[str, FileState | None],
) -> RollbackPlan:
    """The updates that make the job's files `current` equal `target`.

    `tree` gives, for each path of `target` outside `current`, what the parent tree holds
    there (None: nothing). Raises `UsageError` when the job already equals `target`, or
    when restoring would overwrite a file that is no longer the job's.
    """
    taken = sorted(
        p
        for p in target
        if p not in current and tree.get(p) is not None and tree.get(p) != target[p]
    )
    if taken:
        raise UsageError(
            f"restoring would overwrite {', '.join(taken)}, which the job no longer uses "
            "and which changed since; restore it by hand"
        )
    write = {p: s for p, s in sorted(target.items()) if current.get(p) != s and tree.get(p) != s}
    delete = tuple(sorted(p for p in current if p not in target))
    if not write and not delete:
        raise UsageError("the job's files already equal that version: nothing to roll back")
    return RollbackPlan(write=write, delete=delete)


def render_message(job_id: str, version: str) -> str:
    """The commit message of a rollback of `job_id` to `version` (a full SHA)."""
    return f"Roll back {job_id} to {version[:12]}\n\n{RESTORES}: {job_id}@{version}\n"


def default_branch(job_id: str, version: str) -> str:
    """``rollback/JOB-<12 hex>``: the branch a rollback goes to unless told otherwise."""
    return f"rollback/{job_id}-{version[:12]}"


def _tree_entries(repo: Path, commit: str, paths: list[str]) -> dict[str, FileState | None]:
    out: dict[str, FileState | None] = dict.fromkeys(paths)
    if not paths:
        return out
    listing = run_git(
        repo, "ls-tree", "-z", commit, "--", *paths, env={"GIT_LITERAL_PATHSPECS": "1"}
    )
    for record in listing.split("\0"):
        meta, _, path = record.partition("\t")
        fields = meta.split(" ")
        if len(fields) == 3 and fields[1] == "blob" and path in out:
            out[path] = FileState(blob=fields[2], mode=fields[0])  # type: ignore[arg-type]
    return out


def _write_commit(
    repo: Path, parent: CommitSha, plan: RollbackPlan, message: str, environ: Mapping[str, str]
) -> CommitSha:
    lines = [f"{s.mode} {s.blob}\t{p}\n" for p, s in plan.write.items()]
    lines += [f"0 {_ZERO}\t{p}\n" for p in plan.delete]
    with tempfile.TemporaryDirectory(prefix="reconciler-rollback-") as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run_git(repo, "read-tree", parent, env=index)
        run_git(repo, "update-index", "--index-info", input="".join(lines).encode(), env=index)
        tree = run_git(repo, "write-tree", env=index).strip()
    identity = commit_identity_env(repo, environ)
    out = run_git(
        repo, "commit-tree", tree, "-p", parent, "-F", "-", input=message.encode(), env=identity
    )
    return CommitSha(out.strip())


def _check_branch_name(repo: Path, name: str) -> str:
    ref = f"refs/heads/{name}"
    if name.startswith("-") or query_git(repo, "check-ref-format", ref) is None:
        raise UsageError(f"--branch {name!r} is not a valid branch name")
    if query_git(repo, "rev-parse", "--verify", "--quiet", ref) is not None:
        raise UsageError(f"branch {name!r} already exists; choose another with --branch NAME")
    return ref


def _main_checkouts(repo: Path, ref: str) -> list[Path]:
    """The working trees (of `repo` and its linked worktrees) that have `ref` checked out."""
    out = run_git(repo, "worktree", "list", "--porcelain")
    found: list[Path] = []
    current: Path | None = None
    for line in out.splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree ") :])
        elif line == f"branch {ref}" and current is not None:
            found.append(current)
    return found


def _dirty(repo: Path, paths: tuple[str, ...]) -> list[str]:
    out = run_git(
        repo,
        "status",
        "--porcelain",
        "-z",
        "--untracked-files=all",
        "--",
        *paths,
        env={"GIT_LITERAL_PATHSPECS": "1"},
    )
    return sorted({entry[3:] for entry in out.split("\0") if len(entry) > 3})


def _main_ref(repo: Path, main: MainBranch, plan_paths: tuple[str, ...]) -> tuple[str, bool]:
    """The local main ref to commit on, and whether this working tree has it checked out.

    Raises `UsageError` when there is no local main, when main is checked out in another
    working tree, or when the job's files have uncommitted changes here.
    """
    ref = f"refs/heads/{main.name}"
    if query_git(repo, "rev-parse", "--verify", "--quiet", ref) is None:
        raise UsageError(f"--commit needs a local branch {main.name!r}; there is none")
    here = Path(run_git(repo, "rev-parse", "--show-toplevel").strip()).resolve()
    checkouts = [p.resolve() for p in _main_checkouts(repo, ref)]
    others = [str(p) for p in checkouts if p != here]
    if others:
        raise UsageError(
            f"--commit: {main.name} is checked out in {', '.join(others)}; run it there"
        )
    checked_out = here in checkouts
    if checked_out:
        dirty = _dirty(repo, plan_paths)
        if dirty:
            raise UsageError(
                f"--commit: uncommitted changes to the job's files: {', '.join(dirty)}; "
                "commit or discard them first"
            )
    return ref, checked_out


def write_rollback(
    repo: Path,
    job_id: str,
    version_ref: str,
    *,
    main: MainBranch,
    branch: str | None,
    on_main: bool,
    environ: Mapping[str, str],
) -> Rollback:
    """Write the commit that rolls `job_id` back to `version_ref` (a version of it).

    By default on a new branch (`branch`, else `default_branch`) from main's tip, not
    checked out; with `on_main`, on the local main branch (see the module invariants).
    `environ` supplies ``USER`` for the fallback commit identity. Raises `UsageError`
    when `version_ref` is not a version of the job, when nothing would change, or when
    the target ref is unusable; `RepoError` when git fails (then no ref was moved).
    """
    if on_main:
        local = f"refs/heads/{main.name}"
        out = query_git(repo, "rev-parse", "--verify", "--quiet", local)
        if out is None:
            raise UsageError(f"--commit needs a local branch {main.name!r}; there is none")
        parent = CommitSha(out.strip())
    else:
        parent = main.tip
    history: JobHistory = load_job_history(repo, job_id, tip=parent, where=main.name)
    version: JobVersion = resolve_version(repo, history, version_ref)
    outside = sorted(p for p in version.inputs if p not in history.current)
    plan = plan_rollback(history.current, version.inputs, _tree_entries(repo, parent, outside))
    checked_out = False
    if on_main:
        ref, checked_out = _main_ref(repo, main, plan.paths)
    else:
        ref = _check_branch_name(repo, branch or default_branch(job_id, version.sha))
    message = render_message(job_id, version.sha)
    commit = _write_commit(repo, parent, plan, message, environ)
    if checked_out:
        # Bring only the changed paths of the index and working tree along; this fails
        # (changing nothing) if any of them has local changes.
        run_git(repo, "read-tree", "-m", "-u", parent, commit)
    try:
        run_git(
            repo,
            "update-ref",
            "-m",
            f"reconciler rollback {job_id}",
            ref,
            commit,
            parent if on_main else _ZERO,
        )
    except RepoError:
        if checked_out:
            run_git(repo, "read-tree", "-m", "-u", commit, parent)
        raise
    return Rollback(
        job_id=job_id,
        version=version.sha,
        commit=commit,
        parent=parent,
        ref=ref,
        restored=tuple(plan.write),
        deleted=plan.delete,
    )
