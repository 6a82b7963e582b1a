"""The run state machine as a hypothesis state machine: terminal states absorb, every
illegal transition raises, and every legal one is in the table."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from reconciler.errors import IllegalTransition
from reconciler.runs.state import TERMINAL, TRANSITIONS, RunState, path_to, transition


class RunLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = RunState.WAITING
        self.history = [self.state]

    @rule(to=st.sampled_from(list(RunState)))
    def try_transition(self, to: RunState) -> None:
        if to in TRANSITIONS[self.state]:
            self.state = transition("jr_x", self.state, to)
            self.history.append(self.state)
        else:
            with pytest.raises(IllegalTransition):
                transition("jr_x", self.state, to)

    @invariant()
    def terminal_states_absorb(self) -> None:
        seen_terminal = False
        for state in self.history:
            assert not seen_terminal, f"left a terminal state: {self.history}"
            seen_terminal = state.is_terminal

    @invariant()
    def a_finished_run_went_through_starting(self) -> None:
        if self.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.TIMEOUT):
            assert RunState.STARTING in self.history


TestRunLifecycle = RunLifecycle.TestCase
TestRunLifecycle.settings = settings(max_examples=200, stateful_step_count=12, deadline=None)


def test_every_state_has_a_row_and_terminal_rows_are_empty() -> None:
    assert set(TRANSITIONS) == set(RunState)
    for state in TERMINAL:
        assert TRANSITIONS[state] == frozenset()
        assert state.is_terminal


def test_illegal_transition_names_the_run_and_both_states() -> None:
    with pytest.raises(IllegalTransition, match=r"jr_1: illegal transition SUCCEEDED -> RUNNING"):
        transition("jr_1", RunState.SUCCEEDED, RunState.RUNNING)


@pytest.mark.parametrize(
    ("start", "end", "steps"),
    [
        (RunState.STARTING, RunState.SUCCEEDED, [RunState.RUNNING, RunState.SUCCEEDED]),
        (
            RunState.WAITING,
            RunState.SUCCEEDED,
            [RunState.STARTING, RunState.RUNNING, RunState.SUCCEEDED],
        ),
        (RunState.RUNNING, RunState.STOPPED, [RunState.STOPPING, RunState.STOPPED]),
        (RunState.RUNNING, RunState.RUNNING, []),
    ],
)
def test_path_to_fills_in_the_steps_a_look_may_have_missed(
    start: RunState, end: RunState, steps: list[RunState]
) -> None:
    assert path_to("jr_1", start, end) == steps


def test_path_to_refuses_to_leave_a_terminal_state() -> None:
    with pytest.raises(IllegalTransition):
        path_to("jr_1", RunState.FAILED, RunState.SUCCEEDED)
