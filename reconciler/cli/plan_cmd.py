"""`reconciler plan`, `reconciler apply` and `reconciler history`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from reconciler.cli.options import (
    as_option,
    current_user,
    db_option,
    echo_json,
    find_repo,
    output_option,
    repo_option,
    store_url,
)
from reconciler.cli.render import iso_z, table
from reconciler.clock import clock_from_environment
from reconciler.errors import UsageError
from reconciler.plan.model import Action, Plan
from reconciler.plan.render import render_json, render_markdown, render_text

DEFAULT_LOCK_TIMEOUT = 60.0


def render_plan(plan: Plan, output: str) -> str:
    if output == "json":
        return render_json(plan)
    if output == "markdown":
        return render_markdown(plan)
    return render_text(plan)


@click.command()
@repo_option
@click.option("--ref", default=None, help="Branch, tag or commit to plan (default: HEAD).")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the plan (JSON) for `reconciler apply PLANFILE`.",
)
@output_option("text", "json", "markdown")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there are no changes, 2 when there are, 1 on error.",
)
@db_option
def plan(
    repo_path: Path | None,
    ref: str | None,
    out_file: Path | None,
    output: str,
    detailed_exitcode: bool,
    db_url: str | None,
) -> int:
    """Show what applying a commit would change: per job and schedule, with diffs."""
    from reconciler.store import Store
    from reconciler.sync.planning import make_plan
    from reconciler.sync.statedrift import detect_drift

    repo = find_repo(repo_path)
    now = clock_from_environment().now()
    with Store.open(store_url(repo, db_url)) as store:
        result = make_plan(repo, store, ref=ref, now=now)
        drift = detect_drift(repo, store)
    if drift is not None:
        result = replace(result, base=replace(result.base, drift=drift))
    if out_file is not None:
        out_file.write_text(render_json(result), encoding="utf-8")
    click.echo(render_plan(result, output), nl=False)
    if out_file is not None and output == "text":
        click.echo(f"Saved the plan to {out_file}; apply it with `reconciler apply {out_file}`.")
    if detailed_exitcode and result.has_changes:
        return 2
    return 0


def read_saved_plan(path: Path) -> Any:
    from reconciler.ids import CommitSha
    from reconciler.sync.apply import SavedPlanRef

    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return SavedPlanRef(
            commit=CommitSha(str(body["commit"])),
            main_tip=CommitSha(body["mainTip"]) if body.get("mainTip") else None,
            state_serial=int(body["stateSerial"]),
        )
    except FileNotFoundError:
        raise UsageError(f"PLANFILE {path}: no such file") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(
            f"PLANFILE {path}: not a plan written by `reconciler plan --out` ({exc})"
        ) from None


@click.command()
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@repo_option
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_LOCK_TIMEOUT,
    show_default=True,
    help="Seconds to wait for another apply to finish.",
)
@click.option("--allow-older", is_flag=True, help="Apply a commit older than the applied one.")
@click.option(
    "--stop-running",
    is_flag=True,
    help="Stop the active runs of deleted jobs (default: they finish and are recorded).",
)
@db_option
@as_option
def apply(
    planfile: Path | None,
    repo_path: Path | None,
    yes: bool,
    lock_timeout: float,
    allow_older: bool,
    stop_running: bool,
    db_url: str | None,
    as_user: str | None,
) -> None:
    """Make the tip of main live (or exactly the saved PLANFILE), in one transaction."""
    from reconciler.store import Store
    from reconciler.sync.apply import apply_main

    repo = find_repo(repo_path)
    saved = read_saved_plan(planfile) if planfile is not None else None
    confirm = None
    if saved is None and not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "apply asks for confirmation on a terminal; pass --yes to apply "
                "without asking, or apply a saved plan file"
            )

        def confirm(shown: Plan) -> bool:
            click.echo(render_text(shown), nl=False)
            if not shown.has_changes and shown.base.applied_commit == shown.commit:
                return True
            return click.confirm("Apply these changes?", default=False)

    clock = clock_from_environment()
    user = current_user(as_user)
    with Store.open(store_url(repo, db_url)) as store:
        outcome = apply_main(
            repo,
            store,
            user=user,
            now=clock.now(),
            lock_timeout=lock_timeout,
            allow_older=allow_older,
            saved=saved,
            confirm=confirm,
        )
    if confirm is None:
        click.echo(render_text(outcome.plan), nl=False)
    if outcome.record is None:
        click.echo(f"Nothing to apply: {outcome.plan.ref} is live.")
        return
    record = outcome.record
    counts = outcome.plan.summary()
    click.echo(
        f"Applied {record.commit[:12]} as state serial {record.serial}: "
        f"{counts['create']} created, {counts['update']} updated, {counts['delete']} deleted."
    )
    deleted = [c.job_id for c in outcome.plan.changes if c.action is Action.DELETE]
    if stop_running and deleted:
        _stop_runs_of(repo_path, db_url, deleted)


def _stop_runs_of(repo_path: Path | None, db_url: str | None, job_ids: Sequence[str]) -> None:
    """Stop the active runs of deleted jobs (Metronome's --stop-current-job-runs)."""
    from reconciler.cli.runs_cmd import open_runner

    with open_runner(repo_path, db_url) as runner:
        runner.reconcile()
        for job_id in job_ids:
            active = [r.id for r in runner.runs.active() if r.job_id == job_id]
            if active:
                runner.stop(job_id, active)
                click.echo(f"stopping {len(active)} run(s) of deleted job {job_id}")


@click.command()
@repo_option
@db_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Newest N applies.")
@output_option("text", "json")
def history(repo_path: Path | None, db_url: str | None, limit: int | None, output: str) -> None:
    """List applies, newest first: serial, commit, user, commit author, time, summary."""
    from reconciler.cli.options import store_exists
    from reconciler.store import Store

    repo = find_repo(repo_path)
    url = store_url(repo, db_url)
    records = []
    if store_exists(url):
        with Store.open(url) as store:
            records = store.list_applies(limit=limit)
    rows: list[dict[str, Any]] = [
        {
            "serial": r.serial,
            "commit": r.commit,
            "mainTip": r.main_tip,
            "user": r.user,
            "commitAuthor": r.commit_author,
            "appliedAt": iso_z(r.applied_at),
            "summary": dict(r.summary),
        }
        for r in records
    ]
    if output == "json":
        echo_json(rows)
        return
    if not rows:
        click.echo("No applies yet.")
        return
    click.echo(
        table(
            ["SERIAL", "COMMIT", "APPLIED AT", "USER", "COMMIT AUTHOR", "CHANGES"],
            [
                [
                    str(r["serial"]),
                    str(r["commit"])[:12],
                    str(r["appliedAt"]),
                    str(r["user"]),
                    str(r["commitAuthor"] or "-"),
                    _changes(r["summary"]),
                ]
                for r in rows
            ],
        ),
        nl=False,
    )


def _changes(summary: dict[str, Any]) -> str:
    return f"+{summary.get('create', 0)} ~{summary.get('update', 0)} -{summary.get('delete', 0)}"
