"""`reconciler jobs list|show`: job definitions of a version with their next fire times."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
import yaml

from reconciler.cli.options import echo_json, find_repo, output_option, repo_option
from reconciler.cli.render import iso_z, table
from reconciler.cli.source import load_version
from reconciler.clock import clock_from_environment
from reconciler.errors import DefinitionError, UsageError
from reconciler.load.model import JobsRepo, LoadedJob, ResolvedSchedule
from reconciler.schedule import next_fire_times


@click.group()
def jobs() -> None:
    """List and show job definitions."""


def _load_valid(repo_path: Path | None, ref: str | None) -> JobsRepo:
    loaded = load_version(find_repo(repo_path), ref=ref)
    if loaded.errors:
        raise DefinitionError(loaded.errors)
    return loaded


def _next_times(schedule: ResolvedSchedule, now: datetime, count: int) -> list[datetime]:
    return next_fire_times(schedule.cron, schedule.timezone, now, count)


def job_summary(job: LoadedJob, now: datetime, count: int) -> dict[str, Any]:
    """The documented JSON shape of a job in `jobs list` / `jobs show`."""
    schedules = []
    upcoming: list[datetime] = []
    for s in job.schedules:
        times = _next_times(s, now, count) if s.enabled and not job.spec.suspended else []
        upcoming += times[:1]
        schedules.append({**s.to_json(), "nextFireTimes": [iso_z(t) for t in times]})
    return {
        "id": job.id,
        "path": job.path,
        "kind": job.spec.kind,
        "description": job.spec.description,
        "team": job.spec.team,
        "sharedWith": list(job.spec.shared_with),
        "profile": job.profile,
        "suspended": job.spec.suspended,
        "schedules": schedules,
        "nextFireAt": iso_z(min(upcoming)) if upcoming else None,
    }


@jobs.command("list")
@repo_option
@click.option("--ref", default=None, help="Branch, tag or commit (default: HEAD).")
@click.option("--team", default=None, help="Only jobs owned by this team.")
@output_option("text", "json")
def list_jobs(repo_path: Path | None, ref: str | None, team: str | None, output: str) -> None:
    """List the jobs of a version, sorted by id, with their next fire time."""
    loaded = _load_valid(repo_path, ref)
    now = clock_from_environment().now()
    selected = [j for _, j in sorted(loaded.jobs.items()) if team is None or j.spec.team == team]
    summaries = [job_summary(j, now, 1) for j in selected]
    if output == "json":
        echo_json(summaries)
        return
    rows = [
        [
            s["id"],
            s["kind"],
            s["team"] or "(admins)",
            ",".join(x["id"] for x in s["schedules"]) or "-",
            s["nextFireAt"] or "-",
        ]
        for s in summaries
    ]
    click.echo(table(["ID", "KIND", "TEAM", "SCHEDULES", "NEXT FIRE"], rows), nl=False)


@jobs.command("show")
@click.argument("job_id")
@repo_option
@click.option("--ref", default=None, help="Branch, tag or commit (default: HEAD).")
@output_option("text", "json")
def show_job(job_id: str, repo_path: Path | None, ref: str | None, output: str) -> None:
    """Show one job's definition and its schedules' next fire times."""
    loaded = _load_valid(repo_path, ref)
    job = loaded.jobs.get(job_id)  # type: ignore[call-overload]
    if job is None:
        import difflib

        close = difflib.get_close_matches(job_id, list(loaded.jobs), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"no job {job_id!r} in {loaded.label}{hint}")
    now = clock_from_environment().now()
    summary = job_summary(job, now, 5)
    summary["definition"] = job.spec.to_document()
    summary["versionInputs"] = dict(sorted(job.version_inputs.items()))
    if output == "json":
        echo_json(summary)
        return
    click.echo(f"job {job.id}  ({job.path} at {loaded.label})")
    click.echo(yaml.safe_dump(summary["definition"], sort_keys=False).rstrip())
    click.echo(f"profile (resolved): {job.profile}")
    for s in summary["schedules"]:
        click.echo(
            f"schedule {s['id']}: {s['cron']} {s['timezone']}"
            f"{'' if s['enabled'] else ' (disabled)'}"
        )
        for t in s["nextFireTimes"]:
            click.echo(f"  {t}")
