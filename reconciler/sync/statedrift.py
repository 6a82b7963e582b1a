"""Definition drift: the store's applied state is not what the last apply of main made.

Two kinds: the applied rows differ from what the last apply wrote (a manual edit), or
the applied commit is older than one applied before it (`apply --allow-older`). `plan`
and `status` report it; `serve` heals it by re-applying main. Edge: reads git and the
store.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.repo.branches import is_ancestor
from reconciler.store import Store


def detect_drift(repo: Path, store: Store) -> str | None:
    """Why the applied state drifted, or None."""
    state = store.read_state()
    if state.serial == 0:
        return None
    if state.rows_hash is not None and store.applied_rows_hash() != state.rows_hash:
        return f"the applied rows differ from what apply serial {state.serial} wrote"
    applies = store.list_applies(limit=2)
    if len(applies) == 2 and state.commit is not None:
        previous = applies[1].commit
        if previous != state.commit and is_ancestor(repo, state.commit, previous):
            return (
                f"the applied commit {state.commit[:12]} is older than {previous[:12]}, "
                "applied before it (--allow-older)"
            )
    return None
