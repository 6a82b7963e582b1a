"""Schedule math: when a cron expression fires in an IANA time zone, and what is due now.

Invariants:

- Every datetime argument must be aware (a naive one raises ValueError); every result is
  an aware UTC datetime, and every list of results holds distinct instants, increasing.
- Day fields follow Vixie cron: when neither day field starts with ``*``, a day matching
  either fires; otherwise a day must match both.
- Daylight saving time follows Vixie/ISC and Debian cron. A *fixed-time* schedule
  (neither the minute nor the hour field starts with ``*``) fires once per matching
  local wall time: a wall time inside a spring-forward gap fires at the instant the gap
  ends, and a wall time that occurs twice fires at its first occurrence only. A
  *wildcard* schedule follows real time: wall times inside a gap are skipped and a
  repeated wall time fires at both occurrences. Wall times that map to one instant fire
  once.

Pure: does no I/O besides zoneinfo's loading of IANA zone data, never reads the clock
or the environment, and uses only the standard library and tzdata.

Errors::

    ValueError
    ├── CronError          the expression is malformed or can never fire (names the field)
    └── UnknownTimeZone    not an IANA zone name (suggests the closest one)
"""

from __future__ import annotations

import difflib
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import takewhile
from zoneinfo import ZoneInfo, available_timezones

__all__ = [
    "CronError",
    "CronSpec",
    "Due",
    "UnknownTimeZone",
    "check_cron_can_fire",
    "check_timezone",
    "due",
    "fire_times_between",
    "next_fire_times",
    "parse_cron",
]

MACROS: dict[str, str] = {
    "@annually": "0 0 1 1 *",
    "@daily": "0 0 * * *",
    "@hourly": "0 * * * *",
    "@midnight": "0 0 * * *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@yearly": "0 0 1 1 *",
}

_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
_LAST_DAY = date(9999, 12, 30)  # the day after it is the last one datetime can hold
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_TITLES: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # per month, in any year


class CronError(ValueError):
    """A cron expression is malformed or can never fire; `field` names the culprit."""

    def __init__(self, message: str, *, expression: str, field: str | None = None) -> None:
        super().__init__(message)
        self.expression = expression
        self.field = field


class UnknownTimeZone(ValueError):
    """A time zone is not an IANA name; `suggestion` is the closest one, if any."""

    def __init__(self, name: str, suggestion: str | None) -> None:
        hint = f"; did you mean {suggestion!r}?" if suggestion else " (e.g. 'Europe/Berlin', 'UTC')"
        super().__init__(f"{name!r} is not a known IANA time zone{hint}")
        self.name = name
        self.suggestion = suggestion


@dataclass(frozen=True, slots=True, kw_only=True)
class CronSpec:
    """A parsed cron expression: the values each field allows and how days combine."""

    expression: str  # the five fields after macro expansion, single-spaced
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday ... 6 = Saturday (7 is folded into 0)
    day_of_month_restricted: bool  # the field does not start with '*'
    day_of_week_restricted: bool
    is_fixed_time: bool  # neither the minute nor the hour field starts with '*'

    @property
    def days_match_either(self) -> bool:
        """Vixie: with both day fields restricted, a day matching either one fires."""
        return self.day_of_month_restricted and self.day_of_week_restricted


@dataclass(frozen=True, slots=True, kw_only=True)
class Due:
    """What a schedule owes at `now` for the period (since, now]."""

    fire_at: datetime | None  # the most recent schedule time, if still within its deadline
    missed: int  # the other schedule times in (since, now]
    next_at: datetime | None  # the first schedule time after now
    missed_at: tuple[datetime, ...] = ()  # the most recent missed times, increasing


# --- parsing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # names[i] stands for name_base + i
    name_base: int = 0

    def describe_values(self) -> str:
        if not self.names:
            return f"{self.low}-{self.high}"
        return f"{self.low}-{self.high} or {self.names[0]}-{self.names[-1]}"


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS, 1),
    _Field("day-of-week", 0, 7, _WEEKDAYS, 0),
)


class _FieldError(Exception):
    def __init__(self, field: _Field, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


def parse_cron(expr: str) -> CronSpec:
    """Parse a 5-field cron expression or macro; raises CronError naming the bad field."""
    return _parse_cron(expr)


@lru_cache(maxsize=65536)
def _parse_cron(expr: str) -> CronSpec:
    text = expr.strip()

    def error(detail: str, field: str | None = None) -> CronError:
        where = f"{field}: {detail}" if field else detail
        message = f"{text!r} is not a valid cron expression ({where})"
        return CronError(message, expression=text, field=field)

    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            raise error(f"unknown macro {text!r}; valid: {', '.join(sorted(MACROS))}")
        raws = expanded.split()
    else:
        raws = text.split()
    if len(raws) != len(_FIELDS):
        names = " ".join(f.name for f in _FIELDS)
        raise error(f"expected 5 fields: {names}, got {len(raws)}")
    try:
        values = [_parse_field(raw, field) for raw, field in zip(raws, _FIELDS, strict=True)]
    except _FieldError as exc:
        raise error(exc.detail, exc.field.name) from None
    minute, hour, dom, _, dow = (raw.startswith("*") for raw in raws)
    return CronSpec(
        expression=" ".join(raws),
        minutes=values[0],
        hours=values[1],
        days_of_month=values[2],
        months=values[3],
        days_of_week=frozenset(v % 7 for v in values[4]),
        day_of_month_restricted=not dom,
        day_of_week_restricted=not dow,
        is_fixed_time=not (minute or hour),
    )


def _parse_field(raw: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in raw.split(","):
        base, slash, step_text = item.partition("/")
        step = _parse_step(step_text, field) if slash else 1
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            start, _, end = base.partition("-")
            if not start or not end:
                raise _FieldError(
                    field, f"{item!r} is not a range start-end within {field.low}-{field.high}"
                )
            low, high = _parse_value(start, field), _parse_value(end, field)
            if low > high:
                raise _FieldError(
                    field, f"range {base} has start > end (valid range {field.low}-{field.high})"
                )
        else:
            low = _parse_value(base, field)
            high = field.high if slash else low  # Vixie: a/n means a-max/n
        values.update(range(low, high + 1, step))
    return frozenset(values)


def _parse_value(text: str, field: _Field) -> int:
    if text.isdigit():
        value = int(text)
        if not field.low <= value <= field.high:
            raise _FieldError(field, f"{value} is out of range {field.low}-{field.high}")
        return value
    lowered = text.lower()
    if field.names and lowered in field.names:
        return field.names.index(lowered) + field.name_base
    kind = "unknown name" if text.isalpha() else "not a value"
    raise _FieldError(field, f"{kind} {text!r} (use {field.describe_values()})")


def _parse_step(text: str, field: _Field) -> int:
    if not text.isdigit() or not 1 <= int(text) <= field.high:
        raise _FieldError(field, f"step {text!r} is not a number in range 1-{field.high}")
    return int(text)


def check_cron_can_fire(expr: str) -> None:
    """Raise CronError (field "day-of-month") if the expression parses but can never fire."""
    spec = parse_cron(expr)
    reason = _never_fires_reason(spec)
    if reason is not None:
        message = f"{spec.expression!r} can never fire ({reason})"
        raise CronError(message, expression=expr.strip(), field="day-of-month")


def _never_fires_reason(spec: CronSpec) -> str | None:
    # Every date that exists in some year falls on every weekday within 400 years, so only
    # the month and day-of-month fields can rule a schedule out, and only when they must
    # both match a day.
    if spec.days_match_either:
        return None
    if any(d <= _MAX_DAYS[m - 1] for m in spec.months for d in spec.days_of_month):
        return None
    days = ",".join(str(d) for d in sorted(spec.days_of_month))
    months = ", ".join(_MONTH_TITLES[m - 1] for m in sorted(spec.months))
    noun = "month" if len(spec.months) == 1 else "months"
    return f"day-of-month {days} never occurs in {noun} {months}"


@lru_cache(maxsize=4096)
def _can_fire(spec: CronSpec) -> bool:
    return _never_fires_reason(spec) is None


@lru_cache(maxsize=4096)
def _times_of_day(spec: CronSpec) -> tuple[int, ...]:
    return tuple(h * 60 + m for h in sorted(spec.hours) for m in sorted(spec.minutes))


# --- time zones ------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def check_timezone(tz: str) -> None:
    """Raise UnknownTimeZone, with a "did you mean" suggestion, unless tz is an IANA name."""
    names = _zone_names()
    if tz in names:
        return
    by_case = {name.lower(): name for name in names}
    suggestion = by_case.get(tz.strip().lower())
    if suggestion is None:
        close = difflib.get_close_matches(tz, names, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    raise UnknownTimeZone(tz, suggestion)


@lru_cache(maxsize=1024)
def _zone(tz: str) -> ZoneInfo:
    check_timezone(tz)
    return ZoneInfo(tz)


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC)


# --- fire times ------------------------------------------------------------------------


def next_fire_times(cron: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """Return the first `count` schedule times strictly after `after`, increasing, in UTC.

    Fewer are returned only when the schedule can never fire again. Raises CronError,
    UnknownTimeZone, or ValueError (naive `after`, negative `count`).
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    spec, zone = parse_cron(cron), _zone(tz)
    start = _utc(after, "after")
    out: list[datetime] = []
    if count == 0 or not _can_fire(spec):
        return out
    for instant in _iter_fires(spec, tz, zone, start):
        out.append(instant)
        if len(out) == count:
            break
    return out


def fire_times_between(
    cron: str, tz: str, start: datetime, end: datetime, *, limit: int | None = None
) -> list[datetime]:
    """Return the schedule times in (start, end], increasing, in UTC, at most `limit` of them.

    Raises CronError, UnknownTimeZone, or ValueError for naive datetimes.
    """
    spec, zone = parse_cron(cron), _zone(tz)
    lo, hi = _utc(start, "start"), _utc(end, "end")
    out: list[datetime] = []
    if not _can_fire(spec) or (limit is not None and limit <= 0):
        return out
    for instant in _iter_fires(spec, tz, zone, lo):
        if instant > hi:
            break
        out.append(instant)
        if len(out) == limit:
            break
    return out


def due(
    cron: str,
    tz: str,
    *,
    since: datetime,
    now: datetime,
    starting_deadline_seconds: int | None = None,
    max_missed_listed: int = 100,
) -> Due:
    """Return what the schedule owes at `now` for the schedule times in (since, now].

    `fire_at` is the latest of them if `now` is at most `starting_deadline_seconds` after
    it (or no deadline is given); `missed` counts the others, and `missed_at` lists the
    most recent `max_missed_listed` of those. `next_at` is the first time after `now`.
    Raises CronError, UnknownTimeZone, or ValueError (naive datetimes, negative numbers).
    """
    if starting_deadline_seconds is not None and starting_deadline_seconds < 0:
        raise ValueError(f"starting_deadline_seconds must be >= 0, got {starting_deadline_seconds}")
    if max_missed_listed < 0:
        raise ValueError(f"max_missed_listed must be >= 0, got {max_missed_listed}")
    spec, zone = parse_cron(cron), _zone(tz)
    lo, hi = _utc(since, "since"), _utc(now, "now")
    if not _can_fire(spec):
        return Due(fire_at=None, missed=0, next_at=None)
    next_at = next(_iter_fires(spec, tz, zone, hi), None)
    total, recent = _count_and_recent(spec, tz, zone, lo, hi, keep=max_missed_listed + 1)
    if not recent:
        return Due(fire_at=None, missed=0, next_at=next_at)
    latest = recent[-1]
    deadline = starting_deadline_seconds
    on_time = deadline is None or hi - latest <= timedelta(seconds=deadline)
    missed_at = recent[:-1] if on_time else recent
    return Due(
        fire_at=latest if on_time else None,
        missed=total - 1 if on_time else total,
        next_at=next_at,
        missed_at=tuple(missed_at[max(0, len(missed_at) - max_missed_listed) :]),
    )


@dataclass(frozen=True, slots=True)
class _PlainDay:
    """A local date with one UTC offset all day: wall minute m fires at start + m."""

    start: datetime  # local midnight, as a UTC instant
    times: tuple[int, ...]  # matching minutes of the day, increasing

    def index_after(self, instant: datetime) -> int:
        """Index of the first time strictly after `instant` (= how many are at or before)."""
        return bisect_right(self.times, (instant - self.start) // _MINUTE)

    def at(self, index: int) -> datetime:
        return self.start + timedelta(minutes=self.times[index])


def _matching_dates(spec: CronSpec, first: date) -> Iterator[date]:
    """Local dates on or after `first` whose month and day fields match, increasing."""
    year, month = first.year, first.month
    while year <= _LAST_DAY.year:
        if month in spec.months:
            for day in _month_days(spec, year, month):
                candidate = date(year, month, day)
                if first <= candidate <= _LAST_DAY:
                    yield candidate
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


@lru_cache(maxsize=16384)
def _month_days(spec: CronSpec, year: int, month: int) -> tuple[int, ...]:
    length = (date(year + month // 12, month % 12 + 1, 1) - date(year, month, 1)).days
    first_weekday = (date(year, month, 1).weekday() + 1) % 7  # cron numbering: 0 = Sunday
    doms, dows = spec.days_of_month, spec.days_of_week
    if spec.days_match_either:
        return tuple(
            d for d in range(1, length + 1) if d in doms or (first_weekday + d - 1) % 7 in dows
        )
    return tuple(
        d for d in range(1, length + 1) if d in doms and (first_weekday + d - 1) % 7 in dows
    )


def _day(spec: CronSpec, tz: str, zone: ZoneInfo, day: date) -> _PlainDay | tuple[datetime, ...]:
    start = _plain_start(tz, day)
    if start is not None:
        return _PlainDay(start, _times_of_day(spec))
    return _irregular_day(spec, tz, zone, day)


@lru_cache(maxsize=65536)
def _plain_start(tz: str, day: date) -> datetime | None:
    """Local midnight of `day` in UTC, or None if the UTC offset changes during the day.

    Compares the offsets at both ends of the day, so it assumes no date has two changes
    that cancel out; `_iter_fires` and `_count_and_recent` further assume no change
    moves the clock back by a day or more (true of tzdata since the 1800s).
    """
    zone = _zone(tz)
    midnight = datetime(day.year, day.month, day.day)
    start = midnight.replace(tzinfo=zone).astimezone(UTC)
    local = start.astimezone(zone)
    if local.replace(tzinfo=None) != midnight:  # midnight is inside a gap
        return None
    if (start + _DAY).astimezone(zone).utcoffset() != local.utcoffset():
        return None
    return start


@lru_cache(maxsize=1024)
def _irregular_day(spec: CronSpec, tz: str, zone: ZoneInfo, day: date) -> tuple[datetime, ...]:
    """The instants of a date with an offset change, mapped wall time by wall time."""
    instants: set[datetime] = set()
    for minute in _times_of_day(spec):
        wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60)
        first = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first occurrence
        if first.astimezone(zone).replace(tzinfo=None) != wall:  # inside a gap
            if spec.is_fixed_time:
                instants.add(_gap_end(zone, wall))
            continue
        instants.add(first)
        if not spec.is_fixed_time:
            instants.add(wall.replace(tzinfo=zone, fold=1).astimezone(UTC))
    return tuple(sorted(instants))


def _gap_end(zone: ZoneInfo, wall: datetime) -> datetime:
    """The first instant after the spring-forward gap that contains the wall time."""
    one = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = int(min(one, other).timestamp()), int(max(one, other).timestamp())
    offset_after = datetime.fromtimestamp(high, zone).utcoffset()
    while high - low > 1:  # offset(low) is the one before the gap, offset(high) after it
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _iter_fires(spec: CronSpec, tz: str, zone: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Yield the schedule times strictly after `after`, increasing and distinct."""
    # Instants of a plain date all lie after those of earlier dates and before those of
    # later ones, so only dates with an offset change (whose wall times may interleave
    # with a neighbour's) wait in `pending` until the next plain date.
    pending: list[datetime] = []
    last = after
    first = after.astimezone(zone).date()
    for day in _matching_dates(spec, first - _DAY if first > date.min else first):
        chunk = _day(spec, tz, zone, day)
        if isinstance(chunk, _PlainDay):
            for instant in pending:
                yield instant
                last = instant
            pending = []
            for index in range(chunk.index_after(last), len(chunk.times)):
                last = chunk.at(index)
                yield last
        else:
            pending = sorted(set(pending).union(x for x in chunk if x > last))
    yield from pending


def _count_and_recent(
    spec: CronSpec, tz: str, zone: ZoneInfo, low: datetime, high: datetime, *, keep: int
) -> tuple[int, list[datetime]]:
    """How many schedule times lie in (low, high], and the latest `keep` of them."""
    if high <= low:
        return 0, []
    first = low.astimezone(zone).date()
    last = min(high.astimezone(zone).date() + _DAY, _LAST_DAY)
    first = first - _DAY if first > date.min else first
    days = list(takewhile(lambda d: d <= last, _matching_dates(spec, first)))
    plain_total = 0
    plain_days: set[date] = set()
    irregular: set[datetime] = set()
    recent: set[datetime] = set()
    for day in reversed(days):
        chunk = _day(spec, tz, zone, day)
        if isinstance(chunk, _PlainDay):
            begin, end = chunk.index_after(low), chunk.index_after(high)
            plain_total += end - begin
            plain_days.add(day)
            wanted = keep - len(recent)
            if wanted > 0:
                recent.update(chunk.at(i) for i in range(max(begin, end - wanted), end))
        else:
            found = [x for x in chunk if low < x <= high]
            irregular.update(found)
            recent.update(found)
    # A gap's end can coincide with a wall time of the next (plain) date: count it once.
    times = frozenset(_times_of_day(spec))
    shared = 0
    for instant in irregular:
        local = instant.astimezone(zone)
        minute = local.hour * 60 + local.minute
        exact = local.second == 0 and local.microsecond == 0
        shared += local.date() in plain_days and exact and minute in times
    return plain_total + len(irregular) - shared, sorted(recent)[-keep:] if keep else []
