"""The error tree of reconciler: every error the product raises on purpose.

::

    ReconcilerError
    ├── DefinitionError      user input in the jobs repo is invalid (carries diagnostics)
    ├── UsageError           a command-line argument is invalid
    ├── PermissionDenied     the user may not do this to this job (teams, org admins)
    ├── RepoError            git could not answer (unknown ref, not a repository)
    ├── StateError
    │   ├── IllegalTransition    a run state change the state table forbids
    │   ├── LeaseLost            this replica's lease was taken over
    │   └── StalePlan            a saved plan no longer matches the store or main
    ├── StoreError           the state store failed or is unreachable
    └── TargetError          a run target could not start or supervise a run

Foreign exceptions are wrapped where they are caught, with context; they never
reach the command line raw. This module performs no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.load.diagnostic import Diagnostic


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class SourceLocation:
    """A place in the jobs repo: repo-relative POSIX path, 1-based line and column."""

    path: str
    line: int = 0
    column: int = 0

    def render(self) -> str:
        if self.line <= 0:
            return self.path
        return f"{self.path}:{self.line}:{self.column}"


class ReconcilerError(Exception):
    """Base of every error reconciler raises on purpose."""


class DefinitionError(ReconcilerError):
    """The jobs repo at a commit is invalid; `diagnostics` holds every problem found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        lines = "\n".join(d.render() for d in self.diagnostics)
        super().__init__(f"{len(self.diagnostics)} definition error(s):\n{lines}")


class UsageError(ReconcilerError):
    """A command-line argument is invalid; the message names it and what is valid."""


class PermissionDenied(ReconcilerError):
    """The user may not do this (edit, trigger, stop or view a job of other teams)."""


class RepoError(ReconcilerError):
    """Git could not answer: not a repository, unknown ref, unreadable object."""


class StateError(ReconcilerError):
    """A state change was refused."""


class IllegalTransition(StateError):
    """A run state change that the transition table does not allow."""

    def __init__(self, run_id: str, from_: str, to: str) -> None:
        self.run_id = run_id
        self.from_ = from_
        self.to = to
        super().__init__(f"run {run_id}: illegal transition {from_} -> {to}")


class LeaseLost(StateError):
    """This replica no longer holds the leader lease; its writes are refused."""


class StalePlan(StateError):
    """A saved plan was made against a state serial or main tip that has since changed."""


class StoreError(ReconcilerError):
    """The state store failed, is unreachable, or holds data this version cannot read."""


class TargetError(ReconcilerError):
    """A run target could not start, stop or supervise a run."""
