"""The run state machine: one table of legal transitions, as AWS Glue names the states.

Invariants: terminal states absorb (no transition leaves them); any transition not in
`TRANSITIONS` raises `IllegalTransition`. Pure: no I/O.
"""

from __future__ import annotations

from enum import StrEnum

from reconciler.errors import IllegalTransition


class RunState(StrEnum):
    WAITING = "WAITING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    @property
    def is_active(self) -> bool:
        """Holds a slot: started and not finished."""
        return self in (RunState.STARTING, RunState.RUNNING, RunState.STOPPING)


TERMINAL = frozenset(
    {
        RunState.STOPPED,
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.TIMEOUT,
        RunState.ERROR,
        RunState.EXPIRED,
    }
)

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    # queued: started when a slot frees, stopped by a user, expired by its queue timeout
    RunState.WAITING: frozenset(
        {RunState.STARTING, RunState.STOPPED, RunState.EXPIRED, RunState.ERROR}
    ),
    # being started: the process is being created (prerequisites, environment, spawn)
    RunState.STARTING: frozenset(
        {
            RunState.RUNNING,
            RunState.STOPPING,
            RunState.FAILED,
            RunState.TIMEOUT,
            RunState.ERROR,
        }
    ),
    RunState.RUNNING: frozenset(
        {
            RunState.SUCCEEDED,
            RunState.FAILED,
            RunState.TIMEOUT,
            RunState.STOPPING,
            RunState.ERROR,
        }
    ),
    # a stop was asked for: SIGTERM sent, SIGKILL after the grace period
    RunState.STOPPING: frozenset({RunState.STOPPED, RunState.ERROR}),
    **{state: frozenset() for state in TERMINAL},
}


def can_transition(from_: RunState, to: RunState) -> bool:
    return to in TRANSITIONS[from_]


def transition(run_id: str, from_: RunState, to: RunState) -> RunState:
    """Return `to` when the table allows `from_` -> `to`; raise IllegalTransition otherwise."""
    if to not in TRANSITIONS[from_]:
        raise IllegalTransition(run_id, from_.value, to.value)
    return to


def path_to(run_id: str, from_: RunState, to: RunState) -> list[RunState]:
    """The legal steps from `from_` to `to` (a process that started and finished between
    two looks goes STARTING -> RUNNING -> SUCCEEDED); raise IllegalTransition when none."""
    if from_ == to:
        return []
    if to in TRANSITIONS[from_]:
        return [to]
    for middle in (RunState.STARTING, RunState.RUNNING, RunState.STOPPING):
        if middle in TRANSITIONS[from_] and to in TRANSITIONS[middle]:
            return [middle, to]
    if RunState.STARTING in TRANSITIONS[from_] and to in TRANSITIONS[RunState.RUNNING]:
        return [RunState.STARTING, RunState.RUNNING, to]
    raise IllegalTransition(run_id, from_.value, to.value)
