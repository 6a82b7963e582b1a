"""`reconciler schedule next`: upcoming fire times of a cron expression or a job."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from reconciler.cli.options import echo_json, find_repo, output_option, repo_option
from reconciler.cli.render import iso_z, local_time
from reconciler.cli.source import load_version
from reconciler.clock import clock_from_environment, parse_instant
from reconciler.errors import DefinitionError, UsageError
from reconciler.schedule import CronError, check_timezone, next_fire_times, parse_cron


@click.group()
def schedule() -> None:
    """Schedule math."""


@schedule.command("next")
@click.argument("job_id", required=False)
@click.option("--cron", "cron", default=None, help="A cron expression (instead of JOB).")
@click.option("--tz", "tz", default=None, help="IANA time zone for --cron (default: UTC).")
@click.option("--schedule", "schedule_id", default=None, help="One schedule of JOB.")
@click.option("--after", default=None, help="ISO-8601 instant; times strictly after it.")
@click.option("-n", "count", type=click.IntRange(1, 1000), default=5, show_default=True)
@repo_option
@click.option("--ref", default=None, help="Branch, tag or commit for JOB (default: HEAD).")
@output_option("text", "json")
def next_(
    job_id: str | None,
    cron: str | None,
    tz: str | None,
    schedule_id: str | None,
    after: str | None,
    count: int,
    repo_path: Path | None,
    ref: str | None,
    output: str,
) -> None:
    """Print the next fire times: `--cron EXPR --tz TZ`, or `JOB [--schedule ID]`."""
    start = _parse_after(after)
    if (job_id is None) == (cron is None):
        raise click.UsageError("give either JOB or --cron EXPR (with --tz TZ), not both")
    if cron is not None:
        if schedule_id is not None:
            raise click.UsageError("--schedule goes with JOB, not with --cron")
        zone = tz or "UTC"
        _check_cron(cron, zone)
        labelled = [(t, zone, "") for t in next_fire_times(cron, zone, start, count)]
    else:
        if tz is not None:
            raise click.UsageError("--tz goes with --cron; a job's schedules carry their zone")
        labelled = _job_times(repo_path, ref, str(job_id), schedule_id, start, count)
    if output == "json":
        echo_json([iso_z(t) for t, _, _ in labelled])
        return
    for t, zone, sid in labelled:
        suffix = f"  [{sid}]" if sid else ""
        click.echo(f"{iso_z(t)}  ({local_time(t, zone)}){suffix}")


def _parse_after(after: str | None) -> datetime:
    if after is None:
        return clock_from_environment().now()
    try:
        return parse_instant(after)
    except ValueError:
        raise click.BadParameter(
            f"{after!r} is not an ISO-8601 instant (e.g. 2026-03-29T01:00:00Z)",
            param_hint="--after",
        ) from None


def _check_cron(cron: str, tz: str) -> None:
    try:
        parse_cron(cron)
    except CronError as exc:
        raise click.BadParameter(str(exc), param_hint="--cron") from None
    try:
        check_timezone(tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tz") from None


def _job_times(
    repo_path: Path | None,
    ref: str | None,
    job_id: str,
    schedule_id: str | None,
    start: datetime,
    count: int,
) -> list[tuple[datetime, str, str]]:
    loaded = load_version(find_repo(repo_path), ref=ref)
    if loaded.errors:
        raise DefinitionError(loaded.errors)
    job = loaded.jobs.get(job_id)  # type: ignore[call-overload]
    if job is None:
        raise UsageError(f"no job {job_id!r} in {loaded.label}")
    schedules = [s for s in job.schedules if schedule_id is None or s.id == schedule_id]
    if schedule_id is not None and not schedules:
        ids = ", ".join(s.id for s in job.schedules) or "none"
        raise UsageError(f"job {job_id!r} has no schedule {schedule_id!r} (its schedules: {ids})")
    if not schedules:
        raise UsageError(f"job {job_id!r} has no schedules")
    merged: dict[datetime, tuple[str, str]] = {}
    for s in schedules:
        for t in next_fire_times(s.cron, s.timezone, start, count):
            merged.setdefault(t, (s.timezone, s.id))
    return [(t, *merged[t]) for t in sorted(merged)[:count]]
