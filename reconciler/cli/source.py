"""Opening the version a command reads: a ref of the jobs repo or its working tree,
and loading it.

Thin edge: wires `reconciler.repo` snapshots into `reconciler.load`.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.load.loader import load_jobs_repo
from reconciler.load.model import JobsRepo


def load_version(repo: Path, *, ref: str | None, worktree: bool = False) -> JobsRepo:
    """Load `ref` (default HEAD) or the working tree. Raises RepoError for a bad ref."""
    from reconciler.repo.snapshot import open_commit, open_worktree

    if worktree:
        with open_worktree(repo) as snap:
            return load_jobs_repo(snap, label=snap.label, commit=None)
    with open_commit(repo, ref or "HEAD") as commit_snap:
        return load_jobs_repo(commit_snap, label=commit_snap.label, commit=commit_snap.commit)
