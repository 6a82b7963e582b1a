"""Table tests for reconciler.schedule: parsing, DST handling, and what is due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from reconciler.schedule import (
    CronError,
    Due,
    UnknownTimeZone,
    check_cron_can_fire,
    check_timezone,
    due,
    fire_times_between,
    next_fire_times,
    parse_cron,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# --- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "field", "fragment"),
    [
        ("61 * * * *", "minute", "minute: 61 is out of range 0-59"),
        ("* 24 * * *", "hour", "hour: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month", "day-of-month: 0 is out of range 1-31"),
        ("* * 32 * *", "day-of-month", "day-of-month: 32 is out of range 1-31"),
        ("* * * 13 *", "month", "month: 13 is out of range 1-12"),
        ("* * * 0 *", "month", "month: 0 is out of range 1-12"),
        ("* * * * 8", "day-of-week", "day-of-week: 8 is out of range 0-7"),
        ("*/0 * * * *", "minute", "minute: step '0' is not a number in range 1-59"),
        ("* */x * * *", "hour", "hour: step 'x' is not a number in range 1-23"),
        ("* * * */13 *", "month", "month: step '13' is not a number in range 1-12"),
        ("5-2 * * * *", "minute", "minute: range 5-2 has start > end (valid range 0-59)"),
        ("* * * dec-jan *", "month", "month: range dec-jan has start > end"),
        ("* * * foo *", "month", "month: unknown name 'foo' (use 1-12 or jan-dec)"),
        (
            "* * * * sunday",
            "day-of-week",
            "day-of-week: unknown name 'sunday' (use 0-7 or sun-sat)",
        ),
        ("mon * * * *", "minute", "minute: unknown name 'mon' (use 0-59)"),
        ("1,,2 * * * *", "minute", "minute: not a value '' (use 0-59)"),
        ("-1 * * * *", "minute", "minute: '-1' is not a range start-end within 0-59"),
    ],
)
def test_parse_error_names_the_field_and_its_range(expr: str, field: str, fragment: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert info.value.field == field
    message = str(info.value)
    assert message.startswith(f"{expr!r} is not a valid cron expression (")
    assert f"({fragment}" in message


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("* * * *", "expected 5 fields: minute hour day-of-month month day-of-week, got 4"),
        ("* * * * * *", "expected 5 fields: minute hour day-of-month month day-of-week, got 6"),
        ("", "expected 5 fields: minute hour day-of-month month day-of-week, got 0"),
        (
            "@fortnightly",
            "unknown macro '@fortnightly'; valid: @annually, @daily, @hourly, @midnight, "
            "@monthly, @weekly, @yearly",
        ),
    ],
)
def test_parse_error_without_a_field_says_what_is_valid(expr: str, fragment: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert info.value.field is None
    assert fragment in str(info.value)


def test_cron_error_is_a_value_error() -> None:
    assert issubclass(CronError, ValueError)
    assert issubclass(UnknownTimeZone, ValueError)


@pytest.mark.parametrize(
    ("macro", "expansion"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("  @daily  ", "0 0 * * *"),
    ],
)
def test_macros_expand_to_their_five_fields(macro: str, expansion: str) -> None:
    assert parse_cron(macro) == parse_cron(expansion)
    assert parse_cron(macro).expression == expansion


def test_hourly_is_a_wildcard_schedule_and_daily_is_fixed_time() -> None:
    assert not parse_cron("@hourly").is_fixed_time
    assert parse_cron("@daily").is_fixed_time
    assert parse_cron("30 2 * * *").is_fixed_time
    assert not parse_cron("*/15 * * * *").is_fixed_time
    assert not parse_cron("0 */2 * * *").is_fixed_time
    assert not parse_cron("*/5 3 * * *").is_fixed_time


def test_fields_parse_lists_ranges_steps_and_vixie_start_step() -> None:
    spec = parse_cron("  1,5-7,*/20   0-10/5  10/7  */5  *  ")
    assert spec.minutes == {0, 1, 5, 6, 7, 20, 40}
    assert spec.hours == {0, 5, 10}
    assert spec.days_of_month == {10, 17, 24, 31}
    assert spec.months == {1, 6, 11}
    assert spec.days_of_week == set(range(7))
    assert spec.expression == "1,5-7,*/20 0-10/5 10/7 */5 *"


def test_names_are_case_insensitive_and_seven_is_sunday() -> None:
    spec = parse_cron("0 0 * JAN,Mar-may Sun,WED-fri")
    assert spec.months == {1, 3, 4, 5}
    assert spec.days_of_week == {0, 3, 4, 5}
    assert parse_cron("0 0 * * 7").days_of_week == {0}
    assert parse_cron("0 0 * * 5-7").days_of_week == {5, 6, 0}
    assert parse_cron("0 0 * * sun").days_of_week == parse_cron("0 0 * * 7").days_of_week


def test_day_fields_restricted_flags_follow_the_leading_star() -> None:
    assert parse_cron("0 0 1 * mon").days_match_either
    assert not parse_cron("0 0 */2 * mon").days_match_either
    assert not parse_cron("0 0 1 * *").days_match_either
    assert parse_cron("0 0 1-31 * 0-7").days_match_either


# --- day semantics ---------------------------------------------------------------------


def test_vixie_fires_on_a_day_matching_either_restricted_day_field() -> None:
    # 2026-06-01 is a Monday; the 13th is a Saturday; Fridays are 5, 12, 19, 26.
    times = fire_times_between("0 12 13 6 fri", "UTC", utc(2026, 6, 1), utc(2026, 6, 30))
    assert [t.day for t in times] == [5, 12, 13, 19, 26]


def test_a_star_prefixed_day_field_makes_both_day_fields_required() -> None:
    # */2 starts with '*': odd days that are also Fridays (5, 19), as in Vixie cron.
    times = fire_times_between("0 12 */2 6 fri", "UTC", utc(2026, 6, 1), utc(2026, 6, 30))
    assert [t.day for t in times] == [5, 19]
    sundays = fire_times_between("0 0 * 6 7", "UTC", utc(2026, 6, 1), utc(2026, 6, 30))
    assert [t.day for t in sundays] == [7, 14, 21, 28]


def test_thirty_first_of_february_can_never_fire() -> None:
    with pytest.raises(CronError) as info:
        check_cron_can_fire("0 0 31 2 *")
    assert info.value.field == "day-of-month"
    assert str(info.value) == (
        "'0 0 31 2 *' can never fire (day-of-month 31 never occurs in month February)"
    )
    with pytest.raises(CronError, match="day-of-month 30,31 never occurs in month February"):
        check_cron_can_fire("0 0 30,31 2 *")
    with pytest.raises(CronError, match="never occurs in months April, June"):
        check_cron_can_fire("0 0 31 apr,jun *")
    assert next_fire_times("0 0 31 2 *", "UTC", utc(2026, 1, 1), 3) == []


@pytest.mark.parametrize("expr", ["0 0 29 2 *", "0 0 31 * *", "0 0 31 2 mon", "0 0 29 2 */3"])
def test_dates_that_exist_in_some_year_can_fire(expr: str) -> None:
    check_cron_can_fire(expr)
    assert next_fire_times(expr, "UTC", utc(2026, 1, 1), 1)


def test_leap_day_fires_only_in_leap_years() -> None:
    assert next_fire_times("0 0 29 2 *", "UTC", utc(2025, 1, 1), 3) == [
        utc(2028, 2, 29),
        utc(2032, 2, 29),
        utc(2036, 2, 29),
    ]


def test_leap_day_on_a_given_weekday_is_found_decades_ahead() -> None:
    # */7 (= Sunday) starts with '*', so a day must match both fields: Feb 29 on a Sunday.
    assert next_fire_times("0 0 29 2 */7", "UTC", utc(2025, 1, 1), 3) == [
        utc(2032, 2, 29),
        utc(2060, 2, 29),
        utc(2088, 2, 29),
    ]


# --- fire times and DST ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "after", "expected"),
    [
        # Europe/Berlin spring forward 2026-03-29 02:00 -> 03:00: 02:30 fires at 03:00.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 28),
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)],
        ),
        # Europe/Berlin fall back 2026-10-25 03:00 -> 02:00: 02:30 fires once, at the first.
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 10, 24, 12),
            [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
        # Both 02:00 and 02:30 fall in the gap: they map to one instant and fire once.
        (
            "0,30 2 29 3 *",
            "Europe/Berlin",
            utc(2026, 3, 28),
            [utc(2026, 3, 29, 1, 0), utc(2027, 3, 29, 0, 0)],
        ),
        # 03:00 exists and is the gap's end, too: still one fire.
        (
            "0 2,3 29 3 *",
            "Europe/Berlin",
            utc(2026, 3, 28),
            [utc(2026, 3, 29, 1, 0), utc(2027, 3, 29, 0, 0)],
        ),
        # America/New_York spring forward 2026-03-08 02:00 -> 03:00.
        (
            "15 2 * * *",
            "America/New_York",
            utc(2026, 3, 7, 12),
            [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 15)],
        ),
        # America/New_York fall back 2026-11-01 02:00 -> 01:00: 01:30 fires at the first.
        (
            "30 1 * * *",
            "America/New_York",
            utc(2026, 10, 31, 12),
            [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)],
        ),
        # Australia/Lord_Howe: 02:00 -> 02:30 on 2026-10-04 (+10:30 -> +11): 02:15 at 02:30.
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            utc(2026, 10, 2, 12),
            [utc(2026, 10, 2, 15, 45), utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)],
        ),
        # Australia/Lord_Howe: 02:00 -> 01:30 on 2026-04-05 (+11 -> +10:30): first 01:45.
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            utc(2026, 4, 4, 0),
            [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)],
        ),
        # Asia/Kathmandu is +05:45 all year.
        ("0 0 1 1 *", "Asia/Kathmandu", utc(2026, 1, 1), [utc(2026, 12, 31, 18, 15)]),
        # Pacific/Chatham +13:45 in January.
        ("0 12 * * *", "Pacific/Chatham", utc(2026, 1, 10), [utc(2026, 1, 10, 22, 15)]),
    ],
)
def test_next_fire_times_across_dst_transitions(
    cron: str, tz: str, after: datetime, expected: list[datetime]
) -> None:
    assert next_fire_times(cron, tz, after, len(expected)) == expected


def test_gap_across_midnight_fires_once_when_its_end_is_also_a_schedule_time() -> None:
    # America/Nuuk springs from 2026-03-28 23:00 (-02) to 03-29 00:00 (-01) = 01:00Z:
    # 23:00 is skipped and fires at 00:00, which is a schedule time of its own, too.
    times = next_fire_times("0 0,23 * * *", "America/Nuuk", utc(2026, 3, 28), 4)
    assert times == [
        utc(2026, 3, 28, 1),  # 03-27 23:00 -02
        utc(2026, 3, 28, 2),  # 03-28 00:00 -02
        utc(2026, 3, 29, 1),  # 03-28 23:00 (skipped) and 03-29 00:00 -01
        utc(2026, 3, 30, 0),  # 03-29 23:00 -01
    ]
    result = due("0 0,23 * * *", "America/Nuuk", since=utc(2026, 3, 28), now=utc(2026, 3, 30))
    assert (result.fire_at, result.missed) == (utc(2026, 3, 30), 3)
    assert result.missed_at == tuple(times[:3])


def test_wildcard_schedule_fires_at_both_occurrences_of_a_repeated_hour() -> None:
    times = fire_times_between(
        "*/30 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 1, 45)
    )
    # local 02:00 CEST, 02:30 CEST, 02:00 CET, 02:30 CET, 03:00 CET
    assert times == [
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 0),
        utc(2026, 10, 25, 1, 30),
    ]


def test_wildcard_schedule_skips_the_times_of_a_spring_forward_gap() -> None:
    times = fire_times_between(
        "*/30 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 1, 30)
    )
    # local 01:30 CET, then 03:00 and 03:30 CEST: 02:00 and 02:30 do not exist.
    assert times == [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30)]
    hourly = fire_times_between(
        "@hourly", "America/New_York", utc(2026, 3, 8, 5), utc(2026, 3, 8, 8)
    )
    assert hourly == [utc(2026, 3, 8, 6), utc(2026, 3, 8, 7), utc(2026, 3, 8, 8)]


def test_hourly_keeps_its_real_interval_across_a_half_hour_shift() -> None:
    # Lord_Howe falls back 02:00 -> 01:30 on 2026-04-05: local 01:00 once, then 02:00.
    times = fire_times_between(
        "0 * * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 13, 30), utc(2026, 4, 4, 16, 30)
    )
    assert times == [utc(2026, 4, 4, 14, 0), utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 16, 30)]


def test_next_fire_times_is_strictly_after_and_in_utc() -> None:
    berlin = timezone(timedelta(hours=2))
    after = datetime(2026, 7, 1, 2, 30, tzinfo=berlin)  # = 00:30Z, a fire time itself
    times = next_fire_times("30 2 * * *", "Europe/Berlin", after, 2)
    assert times == [utc(2026, 7, 2, 0, 30), utc(2026, 7, 3, 0, 30)]
    assert all(t.tzinfo is UTC for t in times)
    assert next_fire_times("@daily", "UTC", utc(2026, 1, 1), 0) == []


def test_fire_times_between_honours_its_limit() -> None:
    times = fire_times_between("* * * * *", "UTC", utc(2026, 1, 1), utc(2026, 2, 1), limit=3)
    assert times == [utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2), utc(2026, 1, 1, 0, 3)]


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="after must be an aware datetime"):
        next_fire_times("@daily", "UTC", naive, 1)
    with pytest.raises(ValueError, match="since must be an aware datetime"):
        due("@daily", "UTC", since=naive, now=utc(2026, 1, 1))
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        due("@daily", "UTC", since=utc(2026, 1, 1), now=naive)
    with pytest.raises(ValueError, match="start must be an aware datetime"):
        fire_times_between("@daily", "UTC", naive, utc(2026, 1, 1))


def test_negative_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="count must be >= 0"):
        next_fire_times("@daily", "UTC", utc(2026, 1, 1), -1)


# --- time zones ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Europe/Berln", "Europe/Berlin"),
        ("europe/berlin", "Europe/Berlin"),
        ("America/NewYork", "America/New_York"),
        ("Nowhere/AtAll", None),
    ],
)
def test_unknown_time_zone_suggests_the_closest_name(name: str, suggestion: str | None) -> None:
    with pytest.raises(UnknownTimeZone) as info:
        check_timezone(name)
    assert info.value.suggestion == suggestion
    if suggestion is not None:
        assert str(info.value) == (
            f"{name!r} is not a known IANA time zone; did you mean {suggestion!r}?"
        )
    else:
        assert str(info.value).startswith(f"{name!r} is not a known IANA time zone")


def test_unknown_time_zone_is_raised_by_the_schedule_functions() -> None:
    with pytest.raises(UnknownTimeZone, match="did you mean 'Europe/Berlin'"):
        next_fire_times("@daily", "Europe/Berln", utc(2026, 1, 1), 1)
    with pytest.raises(UnknownTimeZone):
        due("@daily", "Mars/Olympus", since=utc(2026, 1, 1), now=utc(2026, 1, 2))


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "Australia/Lord_Howe", "Etc/GMT+5"])
def test_iana_time_zones_are_accepted(name: str) -> None:
    check_timezone(name)


# --- due -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "since", "now", "deadline", "expected"),
    [
        # nothing due yet
        (
            "0 * * * *",
            "UTC",
            utc(2026, 1, 1, 10, 0),
            utc(2026, 1, 1, 10, 59),
            None,
            Due(fire_at=None, missed=0, next_at=utc(2026, 1, 1, 11)),
        ),
        # exactly one due, now is the schedule time itself
        (
            "0 * * * *",
            "UTC",
            utc(2026, 1, 1, 10, 0),
            utc(2026, 1, 1, 11, 0),
            None,
            Due(fire_at=utc(2026, 1, 1, 11), missed=0, next_at=utc(2026, 1, 1, 12)),
        ),
        # several due: the latest fires, the others are missed
        (
            "0 * * * *",
            "UTC",
            utc(2026, 1, 1, 7, 30),
            utc(2026, 1, 1, 11, 5),
            None,
            Due(
                fire_at=utc(2026, 1, 1, 11),
                missed=3,
                next_at=utc(2026, 1, 1, 12),
                missed_at=(utc(2026, 1, 1, 8), utc(2026, 1, 1, 9), utc(2026, 1, 1, 10)),
            ),
        ),
        # within the starting deadline
        (
            "0 * * * *",
            "UTC",
            utc(2026, 1, 1, 10, 0),
            utc(2026, 1, 1, 11, 5),
            300,
            Due(fire_at=utc(2026, 1, 1, 11), missed=0, next_at=utc(2026, 1, 1, 12)),
        ),
        # deadline passed: nothing fires and the latest counts as missed
        (
            "0 * * * *",
            "UTC",
            utc(2026, 1, 1, 9, 30),
            utc(2026, 1, 1, 11, 6),
            300,
            Due(
                fire_at=None,
                missed=2,
                next_at=utc(2026, 1, 1, 12),
                missed_at=(utc(2026, 1, 1, 10), utc(2026, 1, 1, 11)),
            ),
        ),
        # `since` itself is excluded
        (
            "0 * * * *",
            "UTC",
            utc(2026, 1, 1, 11, 0),
            utc(2026, 1, 1, 11, 30),
            None,
            Due(fire_at=None, missed=0, next_at=utc(2026, 1, 1, 12)),
        ),
        # a daily job over the Berlin spring-forward night fires at the gap's end
        (
            "30 2 * * *",
            "Europe/Berlin",
            utc(2026, 3, 28, 12),
            utc(2026, 3, 29, 1, 10),
            900,
            Due(fire_at=utc(2026, 3, 29, 1), missed=0, next_at=utc(2026, 3, 30, 0, 30)),
        ),
    ],
)
def test_due(
    cron: str, tz: str, since: datetime, now: datetime, deadline: int | None, expected: Due
) -> None:
    assert due(cron, tz, since=since, now=now, starting_deadline_seconds=deadline) == expected


def test_due_lists_only_the_most_recent_missed_times() -> None:
    result = due(
        "* * * * *",
        "UTC",
        since=utc(2025, 1, 1),
        now=utc(2026, 1, 1, 0, 0, 30),
        starting_deadline_seconds=10,
        max_missed_listed=3,
    )
    assert result.fire_at is None
    assert result.missed == 365 * 24 * 60
    assert result.missed_at == (
        utc(2025, 12, 31, 23, 58),
        utc(2025, 12, 31, 23, 59),
        utc(2026, 1, 1),
    )
    assert result.next_at == utc(2026, 1, 1, 0, 1)


def test_due_counts_a_year_of_minutes_across_dst_in_berlin() -> None:
    result = due("* * * * *", "Europe/Berlin", since=utc(2025, 1, 1), now=utc(2026, 1, 1))
    assert result.fire_at == utc(2026, 1, 1)
    assert result.missed == 365 * 24 * 60 - 1
    assert len(result.missed_at) == 100
    assert result.missed_at[-1] == utc(2025, 12, 31, 23, 59)


def test_due_counts_a_fixed_time_once_per_day_across_both_dst_changes() -> None:
    result = due(
        "30 2 * * *",
        "Europe/Berlin",
        since=utc(2025, 12, 31),
        now=utc(2026, 12, 31),
        max_missed_listed=400,
    )
    assert result.missed + 1 == 365
    assert len(result.missed_at) == 364
    assert utc(2026, 3, 29, 1, 0) in result.missed_at  # 02:30 in the gap: at its end
    assert utc(2026, 10, 25, 0, 30) in result.missed_at  # 02:30 twice: the first only
    assert utc(2026, 10, 25, 1, 30) not in result.missed_at


def test_due_with_since_after_now_owes_nothing() -> None:
    assert due("* * * * *", "UTC", since=utc(2026, 1, 2), now=utc(2026, 1, 1)) == Due(
        fire_at=None, missed=0, next_at=utc(2026, 1, 1, 0, 1)
    )


def test_due_rejects_a_negative_deadline() -> None:
    with pytest.raises(ValueError, match="starting_deadline_seconds must be >= 0"):
        due(
            "@daily",
            "UTC",
            since=utc(2026, 1, 1),
            now=utc(2026, 1, 2),
            starting_deadline_seconds=-1,
        )
