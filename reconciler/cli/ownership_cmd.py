"""`reconciler check-ownership` (CI on pull requests) and `reconciler codeowners`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.cli.options import find_repo, output_option, repo_option

if TYPE_CHECKING:
    from reconciler.ownership.check import OwnershipReport


def report_json(report: OwnershipReport) -> dict[str, Any]:
    """The documented JSON shape of `check-ownership --output json`."""
    return {
        "base": report.base,
        "head": report.head,
        "mergeBase": report.merge_base,
        "author": report.author,
        "orgAdmin": report.admin,
        "teamsFile": report.teams_file,
        "allowed": report.allowed,
        "changedFiles": len(report.changes),
        "violations": [v.to_json() for v in report.violations],
    }


def _headline(report: OwnershipReport) -> str:
    span = f"{report.base_label} and {report.head_label}"
    if report.allowed:
        why = (
            " (no teams.yaml: everyone is an org admin)"
            if not report.teams_file
            else " (org admin)"
            if report.admin
            else ""
        )
        count = len(report.changes)
        return f"{report.author} may make all {count} changed file(s) between {span}{why}."
    return f"{report.author} may not make {len(report.violations)} change(s) between {span}:"


def render_report_text(report: OwnershipReport) -> str:
    lines = [_headline(report)]
    for v in report.violations:
        lines.append(f"  {v.path} ({v.change.value}) [{v.rule.value}]: {v.reason}")
        lines.append(f"      may change it: {v.who()}")
    return "\n".join(lines) + "\n"


def render_report_markdown(report: OwnershipReport) -> str:
    mark = "✅" if report.allowed else "❌"
    lines = [f"### {mark} reconciler check-ownership", "", _headline(report), ""]
    if report.violations:
        lines += ["| file | change | rule | why | may change it |", "|---|---|---|---|---|"]
        for v in report.violations:
            cells = [f"`{v.path}`", v.change.value, v.rule.value, v.reason, v.who()]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


@click.command("check-ownership")
@repo_option
@click.option("--base", "base", required=True, help="The target branch (e.g. origin/main).")
@click.option("--head", "head", default="HEAD", show_default=True, help="The proposed commit.")
@click.option("--author", required=True, help="The change's author (forge login).")
@output_option("text", "json", "markdown")
def check_ownership(repo_path: Path | None, base: str, head: str, author: str, output: str) -> int:
    """Exit 1, naming each file and why, when AUTHOR may not make what HEAD changes since
    its merge-base with BASE (judged on BASE's teams.yaml and job owners)."""
    from reconciler.ownership.check import check_ownership as judge

    report = judge(find_repo(repo_path), base=base, head=head, author=author)
    if output == "json":
        click.echo(json.dumps(report_json(report), indent=2, ensure_ascii=False))
    elif output == "markdown":
        click.echo(render_report_markdown(report), nl=False)
    else:
        click.echo(render_report_text(report), nl=False)
    return 0 if report.allowed else 1


@click.command("codeowners")
@repo_option
@click.option("--ref", default=None, help="Branch, tag or commit to read (default: HEAD).")
@click.option(
    "--format",
    "forge",
    type=click.Choice(["github", "gitlab"]),
    default="github",
    show_default=True,
    help="CODEOWNERS dialect.",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the file here instead of printing it.",
)
def codeowners(repo_path: Path | None, ref: str | None, forge: str, out_file: Path | None) -> None:
    """Print a CODEOWNERS file approximating the ownership rules (generated, deterministic)."""
    from reconciler.ownership.check import ownership_at
    from reconciler.ownership.codeowners import Forge, render_codeowners

    label, owners = ownership_at(find_repo(repo_path), ref or "HEAD")
    text = render_codeowners(owners, label=label, forge=Forge(forge))
    if out_file is None:
        click.echo(text, nl=False)
        return
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out_file}")


COMMANDS = [check_ownership, codeowners]
