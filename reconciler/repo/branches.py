"""Branches of the jobs repo: which one is main, where its tip is, what lies on it.

Invariants (DESIGN.md "Conventions → Main"): the fallback main branch is the branch
``origin/HEAD`` points to, else ``main``, else ``master``; a string ``mainBranch`` in
``reconciler.yaml`` at the fallback branch's tip overrides it. The tip of main is
``origin/<main>`` when the repo has a remote named ``origin``, else the local branch.
"On main" means on the first-parent history of that tip. Branch names taken from
files only ever reach git inside a full ref name (``refs/heads/...``), never as an
argument of their own.

Does not validate ``reconciler.yaml`` (a file that does not parse, or has no usable
``mainBranch``, is ignored here: `reconciler.load` reports it) and never fetches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.errors import RepoError
from reconciler.ids import CommitSha
from reconciler.repo.git import query_git, resolve_commit, run_git

REMOTE = "origin"
SETTINGS_FILE = "reconciler.yaml"
MAIN_BRANCH_KEY = "mainBranch"
_DEFAULT_CANDIDATES = ("main", "master")

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True, kw_only=True)
class MainBranch:
    """The main branch of the repo and its tip."""

    name: str
    """The branch name, e.g. ``main``."""
    tip_ref: str
    """Where its tip is read from: ``origin/main`` or ``main``."""
    tip: CommitSha


@dataclass(frozen=True, slots=True, kw_only=True)
class BranchRef:
    """A local branch (``feature``) or a remote-tracking one (``origin/feature``)."""

    name: str
    is_remote: bool
    sha: CommitSha


def _ref_sha(repo: Path, full_ref: str) -> CommitSha | None:
    out = query_git(repo, "rev-parse", "--verify", "--quiet", f"{full_ref}^{{commit}}")
    sha = (out or "").strip()
    return CommitSha(sha) if sha else None


def _has_origin(repo: Path) -> bool:
    return REMOTE in run_git(repo, "remote").split()


def _origin_head_branch(repo: Path) -> str | None:
    out = query_git(repo, "symbolic-ref", "--quiet", f"refs/remotes/{REMOTE}/HEAD")
    target = (out or "").strip()
    prefix = f"refs/remotes/{REMOTE}/"
    return target.removeprefix(prefix) if target.startswith(prefix) else None


def _tip_ref(name: str, has_origin: bool) -> tuple[str, str]:
    """Return (short ref, full ref) of the tip of branch `name`."""
    if has_origin:
        return f"{REMOTE}/{name}", f"refs/remotes/{REMOTE}/{name}"
    return name, f"refs/heads/{name}"


def _fallback_branch(repo: Path, has_origin: bool) -> str:
    from_origin = _origin_head_branch(repo) if has_origin else None
    if from_origin:
        return from_origin
    for name in _DEFAULT_CANDIDATES:
        # A CI checkout may hold origin/main without a local main; either will do.
        if _ref_sha(repo, f"refs/heads/{name}") is not None:
            return name
        if has_origin and _ref_sha(repo, f"refs/remotes/{REMOTE}/{name}") is not None:
            return name
    raise RepoError(
        f"no main branch: {repo} has no origin/HEAD, no branch 'main' and no branch 'master'"
    )


def _configured_main(repo: Path, tip: CommitSha) -> str | None:
    """Return ``mainBranch`` from reconciler.yaml at `tip`, or None when not usable."""
    listing = run_git(repo, "ls-tree", "-z", tip, "--", SETTINGS_FILE).rstrip("\0")
    meta, _, _ = listing.partition("\t")
    fields = meta.split(" ")
    if len(fields) != 3 or fields[1] != "blob":
        return None
    text = run_git(repo, "cat-file", "blob", fields[2])
    try:
        settings = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    if not isinstance(settings, dict):
        return None
    name = settings.get(MAIN_BRANCH_KEY)
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip()


def resolve_main(repo: Path) -> MainBranch:
    """Return the main branch of `repo` and its tip commit.

    Raises `RepoError` ("no main branch: ...") when no candidate branch exists, or when
    the branch chosen has no tip (e.g. ``origin/<main>`` was never fetched).
    """
    has_origin = _has_origin(repo)
    name = _fallback_branch(repo, has_origin)
    tip_ref, full_ref = _tip_ref(name, has_origin)
    tip = _ref_sha(repo, full_ref)
    if tip is None:
        raise RepoError(f"no main branch: {tip_ref} does not exist (git fetch {REMOTE}?)")
    configured = _configured_main(repo, tip)
    if configured is not None and configured != name:
        name = configured
        tip_ref, full_ref = _tip_ref(name, has_origin)
        configured_tip = _ref_sha(repo, full_ref)
        if configured_tip is None:
            raise RepoError(
                f"no main branch: {SETTINGS_FILE} sets {MAIN_BRANCH_KEY}: {name!r}, "
                f"but {tip_ref} does not exist"
            )
        tip = configured_tip
    return MainBranch(name=name, tip_ref=tip_ref, tip=tip)


def list_branches(repo: Path) -> list[BranchRef]:
    """Return every local branch, then every remote-tracking branch, each sorted by name.

    Symbolic refs (``origin/HEAD``) are left out. Raises `RepoError` when git fails.
    """
    out = run_git(
        repo,
        "for-each-ref",
        "--format=%(objectname)%09%(symref)%09%(refname)",
        "refs/heads",
        "refs/remotes",
    )
    branches: list[BranchRef] = []
    for line in out.splitlines():
        sha, symref, refname = line.split("\t", 2)
        if symref:
            continue
        is_remote = refname.startswith("refs/remotes/")
        prefix = "refs/remotes/" if is_remote else "refs/heads/"
        branches.append(
            BranchRef(name=refname.removeprefix(prefix), is_remote=is_remote, sha=CommitSha(sha))
        )
    return sorted(branches, key=lambda branch: (branch.is_remote, branch.name))


def is_ancestor(repo: Path, ancestor: str, descendant: str) -> bool:
    """Return whether commit `ancestor` is reachable from `descendant` (a commit is its
    own ancestor). Raises `RepoError` when either names no commit."""
    a = resolve_commit(repo, ancestor)
    d = resolve_commit(repo, descendant)
    return query_git(repo, "merge-base", "--is-ancestor", a, d) is not None


def is_on_main(repo: Path, commit: str, main: MainBranch) -> bool:
    """Return whether `commit` is on the first-parent history of `main.tip` (the tip
    included). Raises `RepoError` when `commit` names no commit.

    Costs a walk from the tip down to `commit` only, not the whole history.
    """
    sha = resolve_commit(repo, commit)
    if sha == main.tip:
        return True
    # Walking first parents from the tip stops at the first commit reachable from
    # `sha`; that commit is `sha` itself exactly when `sha` is on the walk.
    out = run_git(repo, "rev-list", "--first-parent", "--parents", main.tip, f"^{sha}")
    lines = out.splitlines()
    if not lines:
        return False  # the tip is an ancestor of `sha`, and not `sha`
    oldest = lines[-1].split()
    return len(oldest) >= 2 and oldest[1] == sha
