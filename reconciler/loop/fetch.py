"""Following the jobs repo: clone a URL into the state directory, fetch it every tick.

Edge: git processes. A local path without an `origin` remote is read as it is.
"""

from __future__ import annotations

import re
from pathlib import Path

from reconciler.errors import RepoError
from reconciler.repo.git import run_git

URL = re.compile(r"^([a-z][a-z0-9+.-]*://|[^/\s]+@[^:\s]+:)", re.IGNORECASE)
CLONE_DIR = "jobs-repo"


def is_url(value: str) -> bool:
    return URL.match(value) is not None or value.startswith("file://")


def prepare_repo(repo: str, state_dir: Path) -> Path:
    """The local jobs repo to work in: `repo` itself, or its clone under `state_dir`
    when `repo` is a URL or the path of a bare repository (which has no work tree to
    read, so it is followed like a remote)."""
    if not is_url(repo):
        if not _is_bare(Path(repo)):
            return Path(repo).resolve()
        repo = str(Path(repo).resolve())  # git runs in `state_dir`
    target = state_dir / CLONE_DIR
    if (target / ".git").exists():
        return target
    state_dir.mkdir(parents=True, exist_ok=True)
    run_git(state_dir, "clone", "--quiet", "--no-checkout", repo, str(target))
    return target


def _is_bare(path: Path) -> bool:
    if not path.is_dir():
        return False
    try:
        return run_git(path, "rev-parse", "--is-bare-repository").strip() == "true"
    except RepoError:
        return False


def fetch(repo: Path) -> bool:
    """`git fetch origin` when the repo has an origin; False when it has none.

    Raises RepoError when the fetch fails (the loop reports it and keeps going).
    """
    remotes = run_git(repo, "remote").split()
    if "origin" not in remotes:
        return False
    try:
        run_git(repo, "fetch", "--quiet", "--prune", "origin")
    except RepoError as exc:
        raise RepoError(f"fetching origin failed: {exc}") from exc
    return True
