"""Fire decisions over many ticks: every scheduled time is decided exactly once (or
counted in a catch-up's overflow), never while disabled, and MISSED for `deadline` only
once its deadline had passed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.loop.decide import Cursor, LiveSchedule, Outcome, decide
from reconciler.schedule import fire_times_between

START = datetime(2026, 3, 28, 0, 0, tzinfo=UTC)
CRONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "*/15 1-3 * * *", "0 0 * * 0"]
ZONES = ["UTC", "Europe/Berlin", "Australia/Lord_Howe"]


def schedule(cron: str, tz: str, deadline: int | None, enabled: bool = True) -> LiveSchedule:
    return LiveSchedule(
        job_id="j",
        schedule_id="s",
        cron=cron,
        timezone=tz,
        starting_deadline_seconds=deadline,
        concurrency_policy="ALLOW",
        enabled=enabled,
        job_suspended=False,
        applied_at=START,
    )


@settings(max_examples=150, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    tz=st.sampled_from(ZONES),
    deadline=st.one_of(st.none(), st.integers(60, 7200)),
    gaps=st.lists(st.integers(1, 6 * 3600), min_size=1, max_size=30),
)
def test_every_scheduled_time_is_decided_exactly_once(
    cron: str, tz: str, deadline: int | None, gaps: list[int]
) -> None:
    live = schedule(cron, tz, deadline)
    cursor: Cursor | None = None
    now = START
    decided: list[datetime] = []
    overflow = 0
    for gap in gaps:
        now = now + timedelta(seconds=gap)
        decision = decide(live, cursor, now=now, active_runs=0)
        for row in decision.rows:
            assert START < row.scheduled_at <= now
            if row.reason == "deadline":
                assert deadline is not None
                assert (now - row.scheduled_at).total_seconds() > deadline
            if row.outcome is Outcome.FIRED and deadline is not None:
                assert (now - row.scheduled_at).total_seconds() <= deadline
            overflow += row.overflow_count
        decided += [r.scheduled_at for r in decision.rows]
        fired = [r for r in decision.rows if r.outcome is Outcome.FIRED]
        assert len(fired) <= 1  # no storm: at most one fire per decision
        cursor = decision.cursor
    expected = fire_times_between(cron, tz, START, now)
    assert len(decided) == len(set(decided))
    assert set(decided) <= set(expected)
    assert len(decided) + overflow == len(expected)


@settings(max_examples=80, deadline=None)
@given(
    cron=st.sampled_from(CRONS),
    toggles=st.lists(st.tuples(st.integers(60, 4 * 3600), st.booleans()), min_size=2, max_size=20),
)
def test_nothing_from_a_disabled_period_fires_or_counts(
    cron: str, toggles: list[tuple[int, bool]]
) -> None:
    cursor: Cursor | None = None
    now = START
    enabled = True
    disabled_windows: list[tuple[datetime, datetime]] = []
    decided: list[datetime] = []
    for gap, turn_on in toggles:
        before = now
        now = now + timedelta(seconds=gap)
        if not enabled:
            disabled_windows.append((before, now))
        live = schedule(cron, "UTC", None, enabled=enabled)
        decision = decide(live, cursor, now=now, active_runs=0)
        decided += [r.scheduled_at for r in decision.rows]
        cursor = decision.cursor
        enabled = turn_on
    for when in decided:
        assert not any(a < when <= b for a, b in disabled_windows)
    assert len(decided) == len(set(decided))


def test_forbid_skips_while_a_run_is_active_and_replace_asks_to_stop_it() -> None:
    base = schedule("0 * * * *", "UTC", None)
    now = START + timedelta(hours=1, seconds=5)
    forbid = decide(_with_policy(base, "FORBID"), None, now=now, active_runs=1)
    assert [(r.outcome, r.reason) for r in forbid.rows] == [
        (Outcome.SKIPPED, "FORBID: 1 run(s) of the job still active")
    ]
    assert forbid.fire_at is None
    replace = decide(_with_policy(base, "REPLACE"), None, now=now, active_runs=1)
    assert replace.fire_at == START + timedelta(hours=1)
    assert replace.replace is True


def test_catch_up_after_downtime_fires_the_latest_and_supersedes_the_rest() -> None:
    live = schedule("*/5 * * * *", "UTC", None)
    now = START + timedelta(days=2)  # 576 times due
    decision = decide(live, None, now=now, active_runs=0)
    missed = [r for r in decision.rows if r.outcome is Outcome.MISSED]
    assert len(missed) == 100
    assert {r.reason for r in missed} == {"superseded"}
    assert missed[0].overflow_count == 576 - 1 - 100
    assert decision.fire_at == now
    assert decision.cursor.cursor_at == now


def test_a_changed_schedule_takes_effect_from_its_apply() -> None:
    old = schedule("0 * * * *", "UTC", None)
    first = decide(old, None, now=START + timedelta(hours=1), active_runs=0)
    applied = START + timedelta(hours=5)
    changed = LiveSchedule(
        job_id="j",
        schedule_id="s",
        cron="*/30 * * * *",
        timezone="UTC",
        starting_deadline_seconds=None,
        concurrency_policy="ALLOW",
        enabled=True,
        job_suspended=False,
        applied_at=applied,
    )
    later = decide(changed, first.cursor, now=applied + timedelta(minutes=31), active_runs=0)
    assert [r.scheduled_at for r in later.rows] == [applied + timedelta(minutes=30)]


def _with_policy(base: LiveSchedule, policy: str) -> LiveSchedule:
    from dataclasses import replace

    return replace(base, concurrency_policy=policy)
