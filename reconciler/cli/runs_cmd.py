"""Run commands: run, runs, run-info, stop, retry, logs, bookmark, gc."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from reconciler.errors import UsageError
from reconciler.ownership.check import require_run_access

POLL_SECONDS = 0.1
STATES = [
    "WAITING",
    "STARTING",
    "RUNNING",
    "STOPPING",
    "STOPPED",
    "SUCCEEDED",
    "FAILED",
    "TIMEOUT",
    "ERROR",
    "EXPIRED",
]


@contextmanager
def open_runner(repo_path: Path | None, db_url: str | None) -> Iterator[Any]:
    from reconciler.clock import clock_from_environment
    from reconciler.runs.dispatch import Runner
    from reconciler.store import Store
    from reconciler.store.runs import RunStore

    repo = find_repo(repo_path)
    url = store_url(repo, db_url)
    with Store.open(url) as store:
        yield Runner(
            repo=repo, store=store, runs=RunStore(store), clock=clock_from_environment(), db_url=url
        )


def run_json(run: Any, *, deleted: bool = False, restores: str | None = None) -> dict[str, Any]:
    """The documented JSON shape of a run (Glue JobRun field names, camelCase).

    `restores` is the ``Restores: JOB@VERSION`` trailer of the run's version commit
    (see `restores_of`); None when it has none or it was not read.
    """
    details = dict(run.details)
    return {
        "id": run.id,
        "jobName": run.job_id,
        "attempt": run.attempt,
        "previousRunId": run.previous_run_id,
        "trigger": run.trigger,
        "commit": run.commit,
        "version": run.version,
        "restores": restores,
        "draft": {"ref": run.draft_ref, "commit": run.commit} if run.draft_ref else None,
        "state": run.state.value,
        "startedOn": iso_z(run.started_on) if run.started_on else None,
        "lastModifiedOn": iso_z(run.last_modified_on),
        "completedOn": iso_z(run.completed_on) if run.completed_on else None,
        "createdOn": iso_z(run.created_at),
        "arguments": dict(run.arguments),
        "errorMessage": run.error_message,
        "executionTime": run.execution_time,
        "timeout": run.timeout,
        "exitCode": run.exit_code,
        "profile": run.profile,
        "snapshots": run.snapshots,
        "predecessorRuns": list(run.predecessors),
        "logLocation": run.log_location,
        "target": run.target,
        "supervisorPid": run.supervisor_pid,
        "result": details.get("result"),
        "bookmark": details.get("bookmark"),
        "jobDeleted": deleted,
    }


def _print_run(run: Any) -> None:
    click.echo(
        f"{run.id}  {run.job_id}  {run.state.value}"
        + (f"  ({run.error_message})" if run.error_message else "")
    )


def _wait(runner: Any, run: Any, *, follow: bool) -> Any:
    offsets = {"stdout": 0, "stderr": 0}
    while True:
        if run.state.value == "WAITING":
            # What frees its slot may have no finisher left to say so (a supervisor that
            # died): look at every run of this host, which also starts or expires this one.
            runner.reconcile()
        run = runner.get(run.job_id, run.id)
        if follow:
            _follow_once(runner, run, offsets)
        if run.state.is_terminal:
            return run
        time.sleep(POLL_SECONDS)


def _follow_once(runner: Any, run: Any, offsets: dict[str, int]) -> None:
    for stream in ("stdout", "stderr"):
        path = runner.run_dir(run.id) / f"{stream}.log"
        try:
            with path.open("rb") as handle:
                handle.seek(offsets[stream])
                data = handle.read()
        except FileNotFoundError:
            continue
        offsets[stream] += len(data)
        if data:
            click.echo(data.decode("utf-8", "replace"), nl=False, err=stream == "stderr")


@click.command("run")
@click.argument("job_id")
@click.option("--arg", "args", multiple=True, metavar="K=V", help="A run argument (repeatable).")
@click.option("--ref", default=None, help="Run a draft: the job as of this branch or commit.")
@click.option("--wait", is_flag=True, help="Wait for the run to finish; exit 1 unless SUCCEEDED.")
@click.option("--follow", is_flag=True, help="Wait and stream the run's output.")
@click.option("--timeout", type=click.IntRange(min=1), default=None, help="Seconds (overrides).")
@click.option("--no-queue", is_flag=True, help="Fail at once instead of waiting for a slot.")
@repo_option
@db_option
@as_option
@output_option("text", "json")
def run_cmd(
    job_id: str,
    args: tuple[str, ...],
    ref: str | None,
    wait: bool,
    follow: bool,
    timeout: int | None,
    no_queue: bool,
    repo_path: Path | None,
    db_url: str | None,
    as_user: str | None,
    output: str,
) -> int:
    """Start a run of JOB (the live version, or a draft with --ref)."""
    from reconciler.runs.resolve import parse_arguments

    arguments = parse_arguments(args)
    with open_runner(repo_path, db_url) as runner:
        require_run_access(runner, job_id, current_user(as_user), what="run", ref=ref)
        runner.reconcile()
        run = runner.start(
            job_id,
            arguments=arguments,
            ref=ref,
            trigger=f"manual:{current_user(as_user)}",
            no_queue=no_queue,
            timeout=timeout,
        )
        if wait or follow:
            run = _wait(runner, run, follow=follow)
        if output == "json":
            echo_json(run_json(run))
        else:
            _print_run(run)
    if (wait or follow) and run.state.value != "SUCCEEDED":
        return 1
    return 0


def restores_of(repo: Path, runs: list[Any]) -> dict[str, str | None]:
    """Per version commit of `runs`: its ``Restores:`` trailer (None when it has none or
    git cannot tell)."""
    from reconciler.errors import RepoError
    from reconciler.gitops.versions import load_restores

    try:
        return load_restores(repo, [r.version for r in runs if r.version])
    except RepoError:
        return {}


def _lineage(repo: Path, job_id: str) -> list[str]:
    """JOB and the ids its file had before moves on main that no job has now (their
    runs are JOB's history); just JOB when git cannot tell."""
    from reconciler.errors import ReconcilerError
    from reconciler.gitops.versions import load_former_ids
    from reconciler.repo.branches import resolve_main

    try:
        return [job_id, *load_former_ids(repo, job_id, tip=resolve_main(repo).tip)]
    except ReconcilerError:
        return [job_id]


def _deleted(runner: Any, job_id: str) -> bool:
    live = runner.store.read_jobs([job_id], include_deleted=True).get(job_id)
    return live is None or live.deleted_at is not None


@click.command("runs")
@click.argument("job_id")
@click.option("--max-results", type=click.IntRange(1, 200), default=100, show_default=True)
@click.option("--next-token", default=None, help="From a previous page's nextToken.")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES))
@click.option("--drafts", is_flag=True, help="Include draft runs.")
@repo_option
@db_option
@as_option
@output_option("text", "json")
def runs_cmd(
    job_id: str,
    max_results: int,
    next_token: str | None,
    states: tuple[str, ...],
    drafts: bool,
    repo_path: Path | None,
    db_url: str | None,
    as_user: str | None,
    output: str,
) -> None:
    """List runs of JOB, newest first; when JOB's file was moved on main, also the runs
    recorded under its earlier ids that no job has now (git log --follow)."""
    from reconciler.runs.state import RunState

    with open_runner(repo_path, db_url) as runner:
        require_run_access(runner, job_id, current_user(as_user), what="view runs of")
        runner.reconcile()
        page, token = runner.runs.list_runs(
            _lineage(runner.repo, job_id),
            states=[RunState(s) for s in states] or None,
            include_drafts=drafts,
            max_results=max_results,
            next_token=next_token,
        )
        deleted = _deleted(runner, job_id)
        restores = restores_of(runner.repo, page) if output == "json" else {}
    if output == "json":
        runs = [run_json(r, deleted=deleted, restores=restores.get(r.version)) for r in page]
        echo_json({"jobRuns": runs, "nextToken": token})
        return
    if deleted and page:
        click.echo(f"(job {job_id} is not live: deleted or renamed; its history is kept)")
    rows = [
        [
            r.id,
            r.state.value,
            str(r.attempt),
            r.trigger,
            iso_z(r.started_on) if r.started_on else "-",
            str(r.execution_time) if r.execution_time is not None else "-",
            (r.version or "-")[:12],
            r.draft_ref or "",
        ]
        for r in page
    ]
    click.echo(
        table(
            ["RUN", "STATE", "ATTEMPT", "TRIGGER", "STARTED", "SECONDS", "VERSION", "DRAFT"], rows
        ),
        nl=False,
    )
    if token:
        click.echo(f"more: --next-token {token}")


@click.command("run-info")
@click.argument("job_id")
@click.argument("run_id")
@click.option("--predecessors", is_flag=True, help="Include the chain of earlier attempts.")
@repo_option
@db_option
@as_option
@output_option("text", "json")
def run_info(
    job_id: str,
    run_id: str,
    predecessors: bool,
    repo_path: Path | None,
    db_url: str | None,
    as_user: str | None,
    output: str,
) -> None:
    """Show one run."""
    with open_runner(repo_path, db_url) as runner:
        user = current_user(as_user)
        require_run_access(runner, job_id, user, what="view runs of", run_id=run_id)
        runner.reconcile()
        run = runner.get(job_id, run_id)
        restores = restores_of(runner.repo, [run]).get(run.version or "")
        body = run_json(run, deleted=_deleted(runner, job_id), restores=restores)
        chain = []
        if predecessors:
            previous = run.previous_run_id
            while previous:
                earlier = runner.runs.get(previous)
                if earlier is None:
                    break
                chain.append(
                    {
                        "jobName": earlier.job_id,
                        "runId": earlier.id,
                        "state": earlier.state.value,
                        "attempt": earlier.attempt,
                    }
                )
                previous = earlier.previous_run_id
            body["predecessorRuns"] = chain
    if output == "json":
        echo_json(body)
        return
    for key, value in body.items():
        if value not in (None, {}, []):
            click.echo(f"{key}: {value}")


@click.command("stop")
@click.argument("job_id")
@click.argument("run_ids", nargs=-1, required=True)
@repo_option
@db_option
@as_option
@output_option("text", "json")
def stop(
    job_id: str,
    run_ids: tuple[str, ...],
    repo_path: Path | None,
    db_url: str | None,
    as_user: str | None,
    output: str,
) -> int:
    """Stop 1 to 25 runs of JOB; per-run errors for unknown or finished runs."""
    if not 1 <= len(run_ids) <= 25:
        raise UsageError(f"give 1 to 25 run ids, got {len(run_ids)}")
    with open_runner(repo_path, db_url) as runner:
        user = current_user(as_user)
        require_run_access(runner, job_id, user, what="stop runs of", run_id=run_ids[0])
        result = runner.stop(job_id, run_ids)
    body = {
        "successfulSubmissions": [{"jobName": job_id, "jobRunId": r} for r in result.stopped],
        "errors": result.errors,
    }
    if output == "json":
        echo_json(body)
    else:
        for run_id in result.stopped:
            click.echo(f"stopping {run_id}")
        for error in result.errors:
            click.echo(
                f"{error['jobRunId']}: {error['errorCode']}: {error['errorMessage']}", err=True
            )
    return 1 if result.errors else 0


@click.command("retry")
@click.argument("job_id")
@click.argument("run_id")
@repo_option
@db_option
@as_option
@output_option("text", "json")
def retry(
    job_id: str,
    run_id: str,
    repo_path: Path | None,
    db_url: str | None,
    as_user: str | None,
    output: str,
) -> None:
    """Run a finished run again as its next attempt (same commit and arguments)."""
    with open_runner(repo_path, db_url) as runner:
        user = current_user(as_user)
        require_run_access(runner, job_id, user, what="retry runs of", run_id=run_id)
        runner.reconcile()
        run = runner.retry(job_id, run_id)
    if output == "json":
        echo_json(run_json(run))
    else:
        _print_run(run)


@click.command("logs")
@click.argument("job_id")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends.")
@click.option(
    "--stream",
    type=click.Choice(["stdout", "stderr"]),
    default=None,
    help="Only one stream (default: both, stdout first).",
)
@repo_option
@db_option
@as_option
def logs(
    job_id: str,
    run_id: str,
    follow: bool,
    stream: str | None,
    repo_path: Path | None,
    db_url: str | None,
    as_user: str | None,
) -> None:
    """Print a run's output (secret values are redacted when written)."""
    streams = [stream] if stream else ["stdout", "stderr"]
    with open_runner(repo_path, db_url) as runner:
        user = current_user(as_user)
        require_run_access(runner, job_id, user, what="view runs of", run_id=run_id)
        run = runner.get(job_id, run_id)
        if not follow:
            for name in streams:
                path = runner.run_dir(run.id) / f"{name}.log"
                if path.exists():
                    click.echo(
                        path.read_text(encoding="utf-8", errors="replace"),
                        nl=False,
                        err=name == "stderr" and stream is None,
                    )
            return
        offsets = {"stdout": 0, "stderr": 0}
        while True:
            run = runner.get(job_id, run_id)
            for name in streams:
                path = runner.run_dir(run.id) / f"{name}.log"
                if not path.exists():
                    continue
                with path.open("rb") as handle:
                    handle.seek(offsets[name])
                    data = handle.read()
                offsets[name] += len(data)
                click.echo(data.decode("utf-8", "replace"), nl=False)
            if run.state.is_terminal:
                return
            time.sleep(POLL_SECONDS)


@click.group("bookmark")
def bookmark() -> None:
    """Job bookmarks: what a job with `bookmark: enable` processed last."""


def _bookmark_json(b: Any) -> dict[str, Any]:
    return {
        "jobName": b.job_id,
        "value": b.value,
        "runId": b.run_id,
        "committedAt": iso_z(b.committed_at),
    }


@bookmark.command("get")
@click.argument("job_id")
@repo_option
@db_option
@output_option("text", "json")
def bookmark_get(job_id: str, repo_path: Path | None, db_url: str | None, output: str) -> None:
    """Show JOB's committed bookmark."""
    with open_runner(repo_path, db_url) as runner:
        current = runner.runs.get_bookmark(job_id)
    if output == "json":
        echo_json(_bookmark_json(current) if current else None)
    elif current is None:
        click.echo(f"{job_id}: no bookmark")
    else:
        click.echo(
            f"{job_id}: {current.value!r} (run {current.run_id}, {iso_z(current.committed_at)})"
        )


@bookmark.command("list")
@repo_option
@db_option
@output_option("text", "json")
def bookmark_list(repo_path: Path | None, db_url: str | None, output: str) -> None:
    """List committed bookmarks."""
    with open_runner(repo_path, db_url) as runner:
        marks = runner.runs.list_bookmarks()
    if output == "json":
        echo_json([_bookmark_json(b) for b in marks])
        return
    click.echo(
        table(
            ["JOB", "VALUE", "RUN", "COMMITTED"],
            [[b.job_id, repr(b.value), b.run_id or "-", iso_z(b.committed_at)] for b in marks],
        ),
        nl=False,
    )


@bookmark.command("reset")
@click.argument("job_id")
@click.option("--run-id", default=None, help="Set it back to what this run committed.")
@repo_option
@db_option
def bookmark_reset(
    job_id: str, run_id: str | None, repo_path: Path | None, db_url: str | None
) -> None:
    """Forget JOB's bookmark (next run reprocesses everything), or set it back to a run's."""
    with open_runner(repo_path, db_url) as runner:
        result = runner.runs.reset_bookmark(job_id, run_id=run_id, at=runner.clock.now())
    if result is None:
        click.echo(f"{job_id}: bookmark reset; the next run starts from nothing")
    else:
        click.echo(f"{job_id}: bookmark set back to {result.value!r} (run {run_id})")


@click.command("gc")
@repo_option
@db_option
@click.option(
    "--retention-days",
    type=click.IntRange(min=1),
    default=None,
    help="Override reconciler.yaml retentionDays.",
)
def gc(repo_path: Path | None, db_url: str | None, retention_days: int | None) -> None:
    """Remove finished runs and their logs older than retentionDays."""
    with open_runner(repo_path, db_url) as runner:
        days = retention_days
        if days is None:
            row = runner.store.read_files().get("reconciler.yaml")
            days = int(((row.parsed if row else None) or {}).get("retentionDays", 90))
        deleted = runner.gc(days)
    click.echo(f"removed {len(deleted)} run(s) finished more than {days} days ago")


COMMANDS = [run_cmd, runs_cmd, run_info, stop, retry, logs, bookmark, gc]
