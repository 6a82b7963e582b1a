"""`reconciler jobs list|show`: job definitions of a version with their next fire times."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import click
import yaml

from reconciler.cli.options import (
    db_option,
    echo_json,
    find_repo,
    output_option,
    repo_option,
    store_exists,
    store_url,
)
from reconciler.cli.render import iso_z, table
from reconciler.cli.source import load_version
from reconciler.clock import clock_from_environment
from reconciler.errors import DefinitionError, UsageError
from reconciler.load.model import JobsRepo, LoadedJob, ResolvedSchedule
from reconciler.schedule import next_fire_times


@click.group()
def jobs() -> None:
    """List and show job definitions."""


def _load_valid(repo: Path, ref: str | None) -> JobsRepo:
    loaded = load_version(repo, ref=ref)
    if loaded.errors:
        raise DefinitionError(loaded.errors)
    return loaded


def _live_state(repo: Path, db_url: str | None, jobs: list[LoadedJob]) -> dict[str, Any]:
    """Per job: the applied version and whether this version differs from it."""
    url = store_url(repo, db_url)
    if not store_exists(url):
        return {j.id: {"status": "not applied"} for j in jobs}
    from reconciler.plan.desired import desired_job
    from reconciler.store import Store

    with Store.open(url) as store:
        index = store.read_job_index()
        applied = store.read_jobs([j.id for j in jobs]) if len(jobs) == 1 else {}
    out: dict[str, Any] = {}
    for job in jobs:
        recorded = index.get(job.id)
        if recorded is None:
            out[job.id] = {"status": "not applied"}
            continue
        want = desired_job(job)
        same = want.content_hash == recorded.content_hash and dict(want.input_blobs) == dict(
            recorded.input_blobs
        )
        live: dict[str, Any] = {
            "status": "live" if same else "differs",
            "version": recorded.version,
        }
        if job.id in applied:
            live["commit"] = applied[job.id].commit
            live["appliedAt"] = iso_z(applied[job.id].applied_at)
        out[job.id] = live
    return out


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
@db_option
@output_option("text", "json")
def list_jobs(
    repo_path: Path | None, ref: str | None, team: str | None, db_url: str | None, output: str
) -> None:
    """List the jobs of a version, sorted by id, with their next fire time and live state."""
    repo = find_repo(repo_path)
    loaded = _load_valid(repo, ref)
    now = clock_from_environment().now()
    selected = [j for _, j in sorted(loaded.jobs.items()) if team is None or j.spec.team == team]
    live = _live_state(repo, db_url, selected)
    summaries = [{**job_summary(j, now, 1), "live": live[j.id]} for j in selected]
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
            (s["live"].get("version") or "-")[:12],
            s["live"]["status"],
        ]
        for s in summaries
    ]
    headers = ["ID", "KIND", "TEAM", "SCHEDULES", "NEXT FIRE", "LIVE VERSION", "STATE"]
    click.echo(table(headers, rows), nl=False)


def _load_at_version(repo: Path, job_id: str, version: str) -> tuple[JobsRepo, LoadedJob]:
    """The repo and the job as of `version`, which must be a version of `job_id`."""
    from reconciler.gitops.versions import load_job_history, load_version_job, resolve_version
    from reconciler.repo.branches import resolve_main

    main = resolve_main(repo)
    history = load_job_history(repo, job_id, tip=main.tip, where=main.tip_ref)
    return load_version_job(repo, resolve_version(repo, history, version))


@jobs.command("show")
@click.argument("job_id")
@repo_option
@click.option("--ref", default=None, help="Branch, tag or commit (default: HEAD).")
@click.option(
    "--version",
    "version",
    default=None,
    help="Show the job as of this version (a commit listed by `reconciler versions JOB`).",
)
@db_option
@output_option("text", "json")
def show_job(
    job_id: str,
    repo_path: Path | None,
    ref: str | None,
    version: str | None,
    db_url: str | None,
    output: str,
) -> None:
    """Show one job's definition, its schedules' next fire times and its live version."""
    repo = find_repo(repo_path)
    if version is not None and ref is not None:
        raise UsageError("--ref and --version cannot be combined")
    if version is not None:
        loaded, job = _load_at_version(repo, job_id, version)
    else:
        loaded = _load_valid(repo, ref)
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
    summary["live"] = _live_state(repo, db_url, [job])[job.id]
    if version is not None:
        summary["version"] = loaded.commit
    if output == "json":
        echo_json(summary)
        return
    click.echo(f"job {job.id}  ({job.path} at {loaded.label})")
    click.echo(yaml.safe_dump(summary["definition"], sort_keys=False).rstrip())
    click.echo(f"profile (resolved): {job.profile}")
    live = summary["live"]
    click.echo(
        f"live: {live['status']}" + (f" (version {live['version']})" if "version" in live else "")
    )
    for s in summary["schedules"]:
        click.echo(
            f"schedule {s['id']}: {s['cron']} {s['timezone']}"
            f"{'' if s['enabled'] else ' (disabled)'}"
        )
        for t in s["nextFireTimes"]:
            click.echo(f"  {t}")
