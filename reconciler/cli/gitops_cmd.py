"""`reconciler versions|diff|drafts|rollback|drift`: the GitOps workflow over the jobs repo.

Thin: parses arguments, calls `reconciler.gitops`, renders text or the documented JSON.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from reconciler.cli.options import (
    as_option,
    current_user,
    echo_json,
    find_repo,
    output_option,
    repo_option,
)
from reconciler.cli.render import iso_z, table
from reconciler.errors import UsageError


def _parse_since(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"--since {value!r}: give a date (2026-01-31) or an ISO-8601 time"
        ) from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _version_json(version: Any) -> dict[str, Any]:
    info = version.commit
    body = info.message.split("\n", 1)[1].strip("\n") if "\n" in info.message else ""
    return {
        "version": version.sha,
        "jobId": version.job_id,
        "path": version.path,
        "author": {"name": info.author_name, "email": info.author_email},
        "date": iso_z(info.authored_at),
        "subject": info.subject,
        "body": body,
        "restores": version.restores,
        "changed": list(version.changed),
        "inputs": {p: s.blob for p, s in sorted(version.inputs.items())},
    }


@click.command("versions")
@click.argument("job_id")
@click.option("--grep", default=None, help="Only versions whose message or definition has TEXT.")
@click.option("--author", default=None, help="Only versions by this author (name or email).")
@click.option("--since", default=None, help="Only versions authored at or after DATE (UTC).")
@repo_option
@output_option("text", "json")
def versions(
    job_id: str,
    grep: str | None,
    author: str | None,
    since: str | None,
    repo_path: Path | None,
    output: str,
) -> None:
    """List the versions of JOB, newest first: the main commits (first-parent) that
    changed its YAML or snapshot files, following moves of its file.

    --grep searches (case-insensitively) each version's commit message and the text of
    the job's YAML and snapshot files at that version.
    """
    from reconciler.gitops.versions import (
        load_job_history,
        load_texts,
        match_versions,
    )
    from reconciler.repo.branches import resolve_main

    repo = find_repo(repo_path)
    main = resolve_main(repo)
    history = load_job_history(repo, job_id, tip=main.tip, where=main.tip_ref)
    texts = load_texts(repo, history.versions) if grep else {}
    picked = match_versions(
        history.versions,
        grep=grep,
        author=author,
        since=_parse_since(since) if since else None,
        texts=texts,
    )
    if output == "json":
        echo_json(
            {
                "jobId": history.job_id,
                "path": history.path,
                "exists": history.exists,
                "main": {"ref": main.tip_ref, "commit": main.tip},
                "versions": [_version_json(v) for v in picked],
            }
        )
        return
    if not history.exists:
        click.echo(f"(job {job_id} is deleted on {main.tip_ref}; its history is kept)")
    rows = [
        [
            v.sha[:12],
            iso_z(v.commit.authored_at),
            v.commit.author_name,
            v.commit.subject
            + (f"  [restores {v.restores}]" if v.restores else "")
            + (f"  (as {v.job_id})" if v.job_id != history.job_id else ""),
        ]
        for v in picked
    ]
    click.echo(table(["VERSION", "DATE", "AUTHOR", "SUBJECT"], rows), nl=False)


@click.command("diff")
@click.argument("job_id")
@click.argument("old")
@click.argument("new")
@repo_option
@output_option("text", "json")
def diff(job_id: str, old: str, new: str, repo_path: Path | None, output: str) -> None:
    """Show what changed in JOB from version OLD to version NEW: fields of the
    normalized definition, and unified diffs of changed snapshot files."""
    from reconciler.gitops.versions import (
        diff_versions,
        load_job_history,
        load_snapshot_texts,
        load_version_job,
        resolve_version,
    )
    from reconciler.load.normalize import normalize_job
    from reconciler.repo.branches import resolve_main

    repo = find_repo(repo_path)
    main = resolve_main(repo)
    history = load_job_history(repo, job_id, tip=main.tip, where=main.tip_ref)
    sides = [resolve_version(repo, history, ref) for ref in (old, new)]
    definitions = [normalize_job(load_version_job(repo, v)[1]) for v in sides]
    texts = [load_snapshot_texts(repo, v) for v in sides]
    changes = diff_versions(definitions[0], definitions[1], texts[0], texts[1])
    body = {
        "jobId": history.job_id,
        "from": {"version": sides[0].sha, "jobId": sides[0].job_id, "path": sides[0].path},
        "to": {"version": sides[1].sha, "jobId": sides[1].job_id, "path": sides[1].path},
        "fields": [
            {"path": f.path, "action": f.action.value, "old": f.old, "new": f.new}
            for f in changes.fields
        ],
        "files": [
            {"path": f.path, "action": f.action.value, "diff": f.diff} for f in changes.files
        ],
    }
    if output == "json":
        echo_json(body)
        return
    click.echo(f"job {job_id}: {sides[0].sha[:12]} -> {sides[1].sha[:12]}")
    if sides[0].path != sides[1].path:
        click.echo(f"  moved: {sides[0].path} -> {sides[1].path}")
    if changes.empty:
        click.echo("  no changes")
    for f in changes.fields:
        click.echo(f"  {_field_line(f.action.symbol, f.path, f.old, f.new)}")
    for file in changes.files:
        click.echo(file.diff, nl=False)


def _field_line(symbol: str, path: str, old: Any, new: Any) -> str:
    def value(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False, sort_keys=True)

    if symbol == "+":
        return f"+ {path}: {value(new)}"
    if symbol == "-":
        return f"- {path}: {value(old)}"
    return f"~ {path}: {value(old)} -> {value(new)}"


@click.command("drafts")
@repo_option
@output_option("text", "json")
def drafts(repo_path: Path | None, output: str) -> None:
    """List drafts: local and remote-tracking branches (not main) whose tree changes
    job files relative to their merge-base with main.

    Each draft's plan summary compares the jobs loaded at the draft's head with those
    at its merge-base with main (what the draft itself changes, as its pull request
    would show), not with the applied state; a draft whose head has definition errors
    shows their count instead.
    """
    from reconciler.gitops.drafts import load_drafts, render_draft_json
    from reconciler.repo.branches import list_branches, resolve_main

    repo = find_repo(repo_path)
    main = resolve_main(repo)
    found = load_drafts(repo, main, list_branches(repo), cache={})
    if output == "json":
        echo_json(
            {
                "main": {"ref": main.tip_ref, "commit": main.tip},
                "drafts": [render_draft_json(d) for d in found],
            }
        )
        return
    rows = []
    for d in found:
        if d.summary is None:
            plan = f"invalid: {d.errors} error(s)"
        else:
            s = d.summary
            plan = f"+{len(s.create)} ~{len(s.update)} -{len(s.delete)}  " + " ".join(
                [*(f"+{i}" for i in s.create), *(f"~{i}" for i in s.update)]
                + [f"-{i}" for i in s.delete]
            )
        rows.append([d.name, d.head[:12], str(d.commits), plan.rstrip()])
    click.echo(table(["DRAFT", "HEAD", "COMMITS", "PLAN"], rows), nl=False)


@click.command("rollback")
@click.argument("job_id")
@click.option("--to", "version", required=True, help="The version of JOB to restore.")
@click.option("--branch", default=None, help="Name of the new branch (default rollback/JOB-<sha>).")
@click.option(
    "--commit",
    "on_main",
    is_flag=True,
    help="Commit straight on the local main branch instead of a new branch.",
)
@repo_option
@as_option
@output_option("text", "json")
def rollback(
    job_id: str,
    version: str,
    branch: str | None,
    on_main: bool,
    repo_path: Path | None,
    as_user: str | None,
    output: str,
) -> None:
    """Write a commit that restores JOB's files as of version --to: its YAML and
    snapshot files at the paths they had then; files the job has now but not then are
    deleted. The message carries the trailer `Restores: JOB@VERSION`.

    By default the commit goes on a new branch from main's tip (rollback/JOB-<sha>, or
    --branch), which is not checked out: the working tree and index are untouched.
    With --commit it goes on the local main branch; when main is checked out here,
    the job's files must have no uncommitted changes, and they alone are updated in
    the working tree and index (other local changes are kept); when main is checked
    out in another worktree it is refused. Push (and apply) to make it live.
    """
    from reconciler.gitops.rollback import write_rollback
    from reconciler.repo.branches import resolve_main

    if branch is not None and on_main:
        raise UsageError("--branch and --commit cannot be combined")
    repo = find_repo(repo_path)
    main = resolve_main(repo)
    result = write_rollback(
        repo,
        job_id,
        version,
        main=main,
        branch=branch,
        on_main=on_main,
        environ={**os.environ, "USER": current_user(as_user)},
    )
    where = result.ref.removeprefix("refs/heads/")
    if output == "json":
        echo_json(
            {
                "jobId": result.job_id,
                "version": result.version,
                "commit": result.commit,
                "parent": result.parent,
                "branch": where,
                "restored": list(result.restored),
                "deleted": list(result.deleted),
                "restores": f"{result.job_id}@{result.version}",
            }
        )
        return
    click.echo(f"rolled back {job_id} to {result.version[:12]}: commit {result.commit[:12]}")
    click.echo(f"  on branch {where}")
    for path in result.restored:
        click.echo(f"  restored {path}")
    for path in result.deleted:
        click.echo(f"  deleted {path}")
    if not on_main:
        click.echo(f"review and merge {where} into {main.name}, then apply")


@click.command("drift")
@click.option("--ref", default=None, help="Commit to check (default: the tip of main).")
@click.option(
    "--detailed-exitcode", is_flag=True, help="Exit 2 when a snapshot drifted from its origin."
)
@repo_option
@output_option("text", "json")
def drift(ref: str | None, detailed_exitcode: bool, repo_path: Path | None, output: str) -> int:
    """Report SQL snapshot files whose origin (sql.origin) now differs, with a diff.

    A same-repo origin is read at the same commit; another repo's is fetched into
    .reconciler/origins/. An origin that cannot be read is listed as an error. Exit 0;
    with --detailed-exitcode 2 when something drifted; 1 when there are origins and
    none could be read.
    """
    from reconciler.gitops.drift import DriftStatus, load_drift
    from reconciler.repo.branches import resolve_main

    repo = find_repo(repo_path)
    report = load_drift(repo, ref or resolve_main(repo).tip_ref)
    if output == "json":
        echo_json(
            {
                "ref": report.label,
                "commit": report.commit,
                "summary": {s.value: report.count(s) for s in DriftStatus},
                "snapshots": [
                    {
                        "jobId": e.job_id,
                        "snapshot": e.snapshot,
                        "origin": {
                            "repo": e.origin.repo,
                            "ref": e.origin.ref,
                            "path": e.origin.path,
                        },
                        "status": e.status.value,
                        "originCommit": e.origin_commit,
                        "diff": e.diff,
                        "error": e.error,
                    }
                    for e in report.entries
                ],
            }
        )
    else:
        for e in report.entries:
            click.echo(f"{e.status.value:8}  {e.job_id}  {e.snapshot} <- {e.origin.render()}")
            if e.error:
                click.echo(f"  error: {e.error}")
            if e.diff:
                click.echo(e.diff, nl=False)
        summary = ", ".join(f"{report.count(s)} {s.value}" for s in DriftStatus)
        click.echo(f"{len(report.entries)} snapshot(s) with an origin at {report.label}: {summary}")
    return report.exit_code(detailed=detailed_exitcode)


COMMANDS = [versions, diff, drafts, rollback, drift]
