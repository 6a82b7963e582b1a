"""Properties of reconciler.schedule, checked against a minute-by-minute brute force.

The reference scans real instants (UTC minutes; every zone's offset is a multiple of 15
minutes) and converts each to local wall time. A wildcard schedule fires at an instant
iff its wall time matches. A fixed-time schedule fires at an instant iff its wall time
matches and is the first occurrence (fold=0), or the clock jumped forward onto this
instant over a skipped wall time that matches (once, however many matched).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.schedule import (
    CronError,
    check_cron_can_fire,
    due,
    fire_times_between,
    next_fire_times,
)

MINUTE = timedelta(minutes=1)
ZONES = (
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "Europe/Berlin",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Kathmandu",
    "UTC",
    "Australia/Sydney",
    "Europe/London",
    "America/Santiago",
    "America/Nuuk",  # springs forward from 23:00 to 00:00 of the next date
)


@dataclass(frozen=True, slots=True)
class Anchor:
    """An instant worth testing around, and the local wall times to favour near it."""

    instant: datetime  # a whole UTC minute
    hours: tuple[int, ...]
    minutes: tuple[int, ...]


# Month and year ends (and a leap day) are worth a look in every zone.
CALENDAR_ANCHORS = tuple(
    Anchor(instant=datetime(*day, tzinfo=UTC), hours=(0, 12, 23), minutes=(0, 59))
    for day in ((2026, 1, 1), (2026, 7, 1), (2028, 2, 29))
)


def utc_offset_changes(zone_name: str) -> tuple[Anchor, ...]:
    """The instants in 2025-2027 at which the zone's UTC offset changes.

    Scans day by day, then narrows each change down to its minute.
    """
    zone = ZoneInfo(zone_name)

    def offset(instant: datetime) -> timedelta | None:
        return instant.astimezone(zone).utcoffset()

    changes: list[Anchor] = []
    day = datetime(2025, 1, 1, tzinfo=UTC)
    while day < datetime(2028, 1, 1, tzinfo=UTC):
        low, high = day, day + timedelta(days=1)
        day = high
        if offset(low) == offset(high):
            continue
        while high - low > MINUTE:
            middle = low + (high - low) // MINUTE // 2 * MINUTE
            low, high = (low, middle) if offset(middle) == offset(day) else (middle, high)
        before = (high - MINUTE).astimezone(zone)
        after = high.astimezone(zone)
        hours = {(before.hour + k) % 24 for k in range(3)} | {after.hour}
        minutes = {0, 15, 30, 45, before.minute, after.minute}
        changes.append(Anchor(instant=high, hours=tuple(hours), minutes=tuple(minutes)))
    return tuple(changes)


ANCHORS = {zone: utc_offset_changes(zone) + CALENDAR_ANCHORS for zone in ZONES}


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron expression together with the field sets it was generated from."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    doms: frozenset[int]
    months: frozenset[int]
    dows: frozenset[int]  # 0 = Sunday
    minute_star: bool
    hour_star: bool
    dom_star: bool
    dow_star: bool

    @property
    def fixed_time(self) -> bool:
        return not (self.minute_star or self.hour_star)

    def matches(self, wall: datetime) -> bool:
        if wall.minute not in self.minutes or wall.hour not in self.hours:
            return False
        if wall.month not in self.months:
            return False
        dom_ok = wall.day in self.doms
        dow_ok = (wall.weekday() + 1) % 7 in self.dows
        if self.dom_star or self.dow_star:
            return dom_ok and dow_ok
        return dom_ok or dow_ok


def _all(low: int, high: int) -> frozenset[int]:
    return frozenset(range(low, high + 1))


MACROS = {
    "@hourly": Cron("@hourly", frozenset({0}), _all(0, 23), _all(1, 31), _all(1, 12),
                    _all(0, 6), False, True, True, True),
    "@daily": Cron("@daily", frozenset({0}), frozenset({0}), _all(1, 31), _all(1, 12),
                   _all(0, 6), False, False, True, True),
    "@weekly": Cron("@weekly", frozenset({0}), frozenset({0}), _all(1, 31), _all(1, 12),
                    frozenset({0}), False, False, True, False),
    "@monthly": Cron("@monthly", frozenset({0}), frozenset({0}), frozenset({1}), _all(1, 12),
                     _all(0, 6), False, False, False, True),
}  # fmt: skip

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True, slots=True)
class FieldShape:
    low: int
    high: int
    favourites: tuple[int, ...]  # values near DST transitions, drawn more often
    star_weight: int  # out of 10: how often the field is '*' or '*/n'
    names: tuple[str, ...] = ()
    name_base: int = 0


MINUTE_FIELD = FieldShape(0, 59, (0, 15, 30, 45, 59), 3)
HOUR_FIELD = FieldShape(0, 23, (0, 1, 2, 3, 23), 3)
DOM_FIELD = FieldShape(1, 31, (1, 28, 29, 30, 31), 7)
MONTH_FIELD = FieldShape(1, 12, (), 8, MONTH_NAMES, 1)
DOW_FIELD = FieldShape(0, 7, (0, 6, 7), 7, DAY_NAMES, 0)


@st.composite
def cron_field(draw: st.DrawFn, shape: FieldShape) -> tuple[str, frozenset[int], bool]:
    """(text, values, starts with '*') for one field."""
    value = (
        st.one_of(st.sampled_from(shape.favourites), st.integers(shape.low, shape.high))
        if shape.favourites
        else st.integers(shape.low, shape.high)
    )

    def render(v: int) -> str:
        index = v - shape.name_base
        if shape.names and 0 <= index < len(shape.names) and draw(st.booleans()):
            return shape.names[index].upper() if draw(st.booleans()) else shape.names[index]
        return str(v)

    if draw(st.integers(0, 9)) < shape.star_weight:
        if draw(st.booleans()):
            return "*", _all(shape.low, shape.high), True
        step = draw(st.integers(1, shape.high))
        return f"*/{step}", frozenset(range(shape.low, shape.high + 1, step)), True
    texts: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        a, b = sorted((draw(value), draw(value)))
        kind = draw(st.sampled_from(["single", "range", "range-step", "start-step"]))
        step = draw(st.integers(1, shape.high))
        if kind == "single":
            texts.append(render(a))
            values.add(a)
        elif kind == "range":
            texts.append(f"{render(a)}-{render(b)}")
            values.update(range(a, b + 1))
        elif kind == "range-step":
            texts.append(f"{render(a)}-{render(b)}/{step}")
            values.update(range(a, b + 1, step))
        else:
            texts.append(f"{render(a)}/{step}")
            values.update(range(a, shape.high + 1, step))
    return ",".join(texts), frozenset(values), False


@st.composite
def crons(draw: st.DrawFn, anchor: Anchor | None = None) -> Cron:
    """Cron expressions, favouring the local hours and minutes around the anchor."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(list(MACROS.values())))
    minute, hour = MINUTE_FIELD, HOUR_FIELD
    if anchor is not None:
        minute = replace(minute, favourites=anchor.minutes)
        hour = replace(hour, favourites=anchor.hours)
    fields = [
        draw(cron_field(shape)) for shape in (minute, hour, DOM_FIELD, MONTH_FIELD, DOW_FIELD)
    ]
    (mi, mins, mi_star), (ho, hours, ho_star), (dm, doms, dm_star) = fields[:3]
    (mo, months, _), (dw, dows, dw_star) = fields[3:]
    return Cron(
        text=f"{mi} {ho} {dm} {mo} {dw}",
        minutes=mins,
        hours=hours,
        doms=doms,
        months=months,
        dows=frozenset(v % 7 for v in dows),
        minute_star=mi_star,
        hour_star=ho_star,
        dom_star=dm_star,
        dow_star=dw_star,
    )


@dataclass(frozen=True, slots=True)
class Case:
    """A schedule and a window of a few days (start a whole UTC minute) to check it in."""

    cron: Cron
    zone: str
    start: datetime
    end: datetime


@st.composite
def cases(draw: st.DrawFn, days: int = 3) -> Case:
    """A zone, a window holding one of its UTC offset changes (or a calendar edge), and a
    schedule whose times tend to fall near that change."""
    zone = draw(st.sampled_from(ZONES))
    anchor = draw(st.sampled_from(ANCHORS[zone]))
    start = anchor.instant - timedelta(minutes=draw(st.integers(1, (days - 1) * 1440)))
    cron = draw(crons(anchor))
    return Case(cron=cron, zone=zone, start=start, end=start + timedelta(days=days))


def reference(cron: Cron, zone_name: str, start: datetime, end: datetime) -> list[datetime]:
    """Fire times in (start, end] by brute force; start must be a whole UTC minute."""
    zone = ZoneInfo(zone_name)
    fires: list[datetime] = []
    previous = start.astimezone(zone).replace(tzinfo=None)
    instant = start + MINUTE
    while instant <= end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        if cron.fixed_time:
            fires_here = local.fold == 0 and cron.matches(wall)
            skipped = previous + MINUTE
            while not fires_here and skipped < wall:
                fires_here = cron.matches(skipped)
                skipped += MINUTE
        else:
            fires_here = cron.matches(wall)
        if fires_here:
            fires.append(instant)
        previous = wall
        instant += MINUTE
    return fires


def floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


@settings(max_examples=150, deadline=None)
@given(case=cases(), seconds=st.integers(0, 59), count=st.integers(1, 8))
def test_fire_times_agree_with_the_minute_by_minute_reference(
    case: Case, seconds: int, count: int
) -> None:
    after = case.start + timedelta(seconds=seconds)
    expected = [t for t in reference(case.cron, case.zone, case.start, case.end) if t > after]

    assert fire_times_between(case.cron.text, case.zone, after, case.end) == expected
    upcoming = next_fire_times(case.cron.text, case.zone, after, count)
    in_window = [t for t in upcoming if t <= case.end]
    assert in_window == expected[: len(in_window)]
    assert len(in_window) == min(count, len(expected))


@settings(max_examples=150, deadline=None)
@given(case=cases(), count=st.integers(1, 12))
def test_fire_times_are_distinct_increasing_utc_and_after_the_start(case: Case, count: int) -> None:
    times = next_fire_times(case.cron.text, case.zone, case.start, count)
    try:
        check_cron_can_fire(case.cron.text)
    except CronError:
        assert times == []
        return
    assert len(times) == count
    assert all(t.tzinfo is UTC for t in times)
    assert all(a < b for a, b in zip([case.start, *times], times, strict=False))


@settings(max_examples=150, deadline=None)
@given(case=cases().filter(lambda case: case.cron.fixed_time))
def test_fixed_time_fires_land_on_matching_wall_times_or_a_gap_end_and_never_twice(
    case: Case,
) -> None:
    zone = ZoneInfo(case.zone)
    times = fire_times_between(case.cron.text, case.zone, case.start, case.end)
    walls = [t.astimezone(zone).replace(tzinfo=None) for t in times]
    assert len(set(walls)) == len(walls)  # no wall time fires twice (no second occurrence)
    for instant, wall in zip(times, walls, strict=True):
        local = instant.astimezone(zone)
        if case.cron.matches(wall):
            assert local.fold == 0  # the first occurrence of a repeated wall time
            continue
        # Otherwise a spring-forward gap ends at this instant and a skipped wall time
        # matched; the wall time it lands on is the first one after the gap.
        before = (instant - timedelta(seconds=1)).astimezone(zone)
        assert before.utcoffset() != local.utcoffset()
        gap_start = floor_minute(before.replace(tzinfo=None)) + MINUTE
        gap = [gap_start + k * MINUTE for k in range(int((wall - gap_start) / MINUTE))]
        assert any(case.cron.matches(w) for w in gap)


def _deadlines() -> st.SearchStrategy[int | None]:
    return st.one_of(
        st.none(),
        st.sampled_from([0, 60, 900, 3600]),
        st.integers(0, 120),
        st.integers(0, 2 * 86400),
    )


@settings(max_examples=120, deadline=None)
@given(
    case=cases(days=4),
    since_minutes=st.integers(0, 2 * 1440),
    span_minutes=st.integers(0, 36 * 60),
    seconds=st.integers(0, 59),
    deadline=_deadlines(),
    listed=st.one_of(st.none(), st.integers(0, 5)),
)
def test_due_agrees_with_the_reference(
    case: Case,
    since_minutes: int,
    span_minutes: int,
    seconds: int,
    deadline: int | None,
    listed: int | None,
) -> None:
    since = case.start + timedelta(minutes=since_minutes, seconds=seconds)
    now = since + timedelta(minutes=span_minutes, seconds=seconds)
    fires = reference(case.cron, case.zone, case.start, case.end)
    owed = [t for t in fires if since < t <= now]
    later = [t for t in fires if t > now]

    cron, zone = case.cron.text, case.zone
    if listed is None:
        result = due(cron, zone, since=since, now=now, starting_deadline_seconds=deadline)
    else:
        result = due(
            cron,
            zone,
            since=since,
            now=now,
            starting_deadline_seconds=deadline,
            max_missed_listed=listed,
        )

    on_time = bool(owed) and (deadline is None or now - owed[-1] <= timedelta(seconds=deadline))
    missed = owed[:-1] if on_time else owed
    limit = 100 if listed is None else listed
    assert result.fire_at == (owed[-1] if on_time else None)
    assert result.missed == len(missed)
    assert result.missed_at == tuple(missed[max(0, len(missed) - limit) :])
    if later:
        assert result.next_at == later[0]
    else:
        assert result.next_at is None or result.next_at > case.end
