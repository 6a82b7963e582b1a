"""`reconciler validate`: check one version of the jobs repo and report every problem."""

from __future__ import annotations

from pathlib import Path

import click

from reconciler.cli.options import echo_json, find_repo, output_option, repo_option
from reconciler.cli.source import load_version
from reconciler.load.model import JobsRepo


@click.command()
@repo_option
@click.option("--ref", default=None, help="Branch, tag or commit to validate (default: HEAD).")
@click.option("--worktree", is_flag=True, help="Validate the working tree instead of a commit.")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@output_option("text", "json")
def validate(
    repo_path: Path | None, ref: str | None, worktree: bool, strict: bool, output: str
) -> int:
    """Check job definitions: every error of the version at once, with file:line:column.

    Exit 0 when valid (warnings allowed unless --strict), 1 otherwise.
    """
    if ref is not None and worktree:
        raise click.UsageError("--ref and --worktree exclude each other; give one")
    repo = find_repo(repo_path)
    loaded = load_version(repo, ref=ref, worktree=worktree)
    failed = bool(loaded.errors) or (strict and bool(loaded.warnings))
    if output == "json":
        echo_json(render_validation_json(loaded, strict=strict))
    else:
        click.echo(render_validation_text(loaded), nl=False)
    return 1 if failed else 0


def render_validation_text(loaded: JobsRepo) -> str:
    lines = [d.render() for d in loaded.diagnostics]
    errors, warnings = len(loaded.errors), len(loaded.warnings)
    if errors:
        summary = f"{loaded.label}: {_count(errors, 'error')}, {_count(warnings, 'warning')}"
    else:
        summary = (
            f"{loaded.label}: valid, {_count(len(loaded.jobs), 'job')}, "
            f"{_count(warnings, 'warning')}"
        )
    return "\n".join([*lines, summary]) + "\n"


def render_validation_json(loaded: JobsRepo, *, strict: bool) -> dict[str, object]:
    """The documented shape: ref label, commit, valid, errors, warnings, stats."""
    return {
        "ref": loaded.label,
        "commit": loaded.commit,
        "valid": not loaded.errors and not (strict and loaded.warnings),
        "errors": [d.to_json() for d in loaded.errors],
        "warnings": [d.to_json() for d in loaded.warnings],
        "stats": {"jobs": len(loaded.jobs), "filesParsed": loaded.files_parsed},
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
