"""Opening the version a command reads: a ref of the jobs repo or its working tree,
and loading it.

Thin edge: wires `reconciler.repo` snapshots into `reconciler.load`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.load.loader import load_jobs_repo
from reconciler.load.model import JobsRepo


def load_version(repo: Path, *, ref: str | None, worktree: bool = False) -> JobsRepo:
    """Load `ref` (default HEAD) or the working tree. Raises RepoError for a bad ref."""
    from reconciler.repo.snapshot import open_commit, open_worktree

    with _cycle_collector_paused():
        if worktree:
            with open_worktree(repo) as snap:
                return load_jobs_repo(snap, label=snap.label, commit=None)
        with open_commit(repo, ref or "HEAD") as commit_snap:
            return load_jobs_repo(commit_snap, label=commit_snap.label, commit=commit_snap.commit)


@contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while loading, then restore it.

    Loading allocates millions of objects and keeps many of them, so the collector's
    full passes over everything kept so far cost about a quarter of a large repo's load
    time (measured: 0.6 s of 2.4 s CPU at 10,000 jobs) while finding almost no cycles
    (a few dozen objects). Reference counting still frees everything else at once, so
    peak memory does not change; what few cycles there are wait for the next collection.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
