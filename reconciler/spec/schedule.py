"""Schedules as written in a job's `schedules:` list or in `schedules/<id>.yaml`.

Pure: no I/O. Cron syntax and time zones are checked with `reconciler.schedule`;
whether a `use:` names an existing file is a cross-file rule of the loader.
"""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, field_validator
from pydantic_core import PydanticCustomError

from reconciler import schedule as schedule_math
from reconciler.spec.base import SpecModel
from reconciler.spec.ids import SCHEDULE_ID_RULE, is_schedule_id


class ConcurrencyPolicy(StrEnum):
    ALLOW = "ALLOW"
    FORBID = "FORBID"
    REPLACE = "REPLACE"


def check_schedule_id(value: str) -> str:
    if not is_schedule_id(value):
        raise PydanticCustomError(
            "schedule_id",
            "{shown} is not a valid schedule id (" + SCHEDULE_ID_RULE + ")",
            {"shown": repr(value)},
        )
    return value


def check_cron(value: str) -> str:
    problem = _cron_problem(value)
    if problem is not None:
        raise PydanticCustomError("cron", "{message}", {"message": problem})
    return value


@functools.lru_cache(maxsize=4096)
def _cron_problem(value: str) -> str | None:
    """Why `value` is not a cron expression that can fire, or None; cached because a
    repo repeats a few expressions across thousands of jobs."""
    try:
        schedule_math.parse_cron(value)
        schedule_math.check_cron_can_fire(value)
    except schedule_math.CronError as exc:
        return str(exc)
    return None


def check_timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        schedule_math.check_timezone(value)
    except ValueError as exc:
        raise PydanticCustomError("timezone", "{message}", {"message": str(exc)}) from None
    return value


class ScheduleFields(SpecModel):
    """The fields every schedule has, inline or reusable."""

    cron: str = Field(description="5-field cron expression or @hourly/@daily/@weekly/...")
    timezone: str | None = Field(
        default=None, description="IANA time zone (default: reconciler.yaml timezone, else UTC)"
    )
    starting_deadline_seconds: int | None = Field(
        default=None, ge=1, description="a fire later than this after its time is MISSED"
    )
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    enabled: bool = True

    _check_cron = field_validator("cron")(check_cron)
    _check_timezone = field_validator("timezone")(check_timezone)


class ScheduleSpec(ScheduleFields):
    """An inline schedule of a job."""

    id: str = Field(description="schedule id, unique within the job (" + SCHEDULE_ID_RULE + ")")

    _check_id = field_validator("id")(check_schedule_id)


class ScheduleUse(SpecModel):
    """A reference to a reusable schedule `schedules/<id>.yaml`."""

    use: str = Field(description="id of a reusable schedule in schedules/")

    _check_use = field_validator("use")(check_schedule_id)


class ReusableScheduleSpec(ScheduleFields):
    """`schedules/<id>.yaml`: the id is the file name; an `id` key, if given, must match it."""

    id: str | None = Field(default=None, description="optional; must equal the file name")


def _schedule_entry_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "use" if "use" in value else "inline"
    if isinstance(value, ScheduleUse):
        return "use"
    return "inline"


ScheduleEntry = Annotated[
    Annotated[ScheduleSpec, Tag("inline")] | Annotated[ScheduleUse, Tag("use")],
    Discriminator(_schedule_entry_kind),
]
