"""Rendering a plan as text (terminals), JSON (machines, saved plans) and Markdown (PR comments).

Documented order: changes by action (create, update, delete) then job id; fields by
path; files by path; schedules by id; changed shared files (`affects`) by path, their jobs
by id; warnings by path, line, column. Markdown (a pull-request comment) stays under
`MARKDOWN_LIMIT` characters: a longer plan keeps its summary and shared files, shows the
jobs that fit, and ends with a line pointing to the full plan. Pure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from reconciler.plan.model import Action, FieldChange, JobChange, Plan, SharedFileChange

PLAN_FORMAT = 1
MARKDOWN_LIMIT = 60_000
"""Characters of a Markdown plan; GitHub refuses comments over 65,536."""
PLAN_ARTIFACT = "reconciler-plan"
"""The CI artifact holding the full plan (`plan.json`), as the CI templates name it."""
MARKDOWN_JOBS_PER_FILE = 20
_VERB = {Action.CREATE: "added", Action.UPDATE: "changed", Action.DELETE: "deleted"}


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _short(sha: str | None) -> str:
    return sha[:7] if sha else "none"


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The documented, stable JSON shape of a plan (also the saved plan file)."""
    return {
        "formatVersion": PLAN_FORMAT,
        "ref": plan.ref,
        "commit": plan.commit,
        "mainTip": plan.base.main_tip,
        "stateSerial": plan.base.state_serial,
        "appliedCommit": plan.base.applied_commit,
        "drift": plan.base.drift,
        "generatedAt": _iso(plan.generated_at),
        "summary": plan.summary(),
        "changes": [_change_json(c) for c in plan.changes],
        "affects": [
            {"path": a.path, "action": a.action.value, "jobs": list(a.jobs)} for a in plan.affects
        ],
        "warnings": [w.to_json() for w in plan.warnings],
        "stats": dict(sorted(plan.stats.items())),
    }


def _change_json(change: JobChange) -> dict[str, Any]:
    return {
        "jobId": change.job_id,
        "action": change.action.value,
        "path": change.path,
        "fields": [
            {"path": f.path, "action": f.action.value, "old": f.old, "new": f.new}
            for f in change.fields
        ],
        "files": [{"path": f.path, "action": f.action.value, "diff": f.diff} for f in change.files],
        "schedules": [
            {
                "id": s.id,
                "action": s.action.value,
                "cron": s.cron,
                "timezone": s.timezone,
                "nextFireTimes": [_iso(t) for t in s.next_fire_times],
            }
            for s in change.schedules
        ],
    }


def render_json(plan: Plan) -> str:
    return json.dumps(plan_to_json(plan), indent=2, ensure_ascii=False) + "\n"


def _field_line(f: FieldChange) -> str:
    if f.action is Action.CREATE:
        return f"+ {f.path}: {_value(f.new)}"
    if f.action is Action.DELETE:
        return f"- {f.path}: {_value(f.old)}"
    return f"~ {f.path}: {_value(f.old)} -> {_value(f.new)}"


def _summary_line(plan: Plan) -> str:
    return (
        f"Plan: {plan.count(Action.CREATE)} to create, {plan.count(Action.UPDATE)} to update, "
        f"{plan.count(Action.DELETE)} to delete, {plan.unchanged} unchanged."
    )


def _affects_line(shared: SharedFileChange, *, limit: int | None = None, code: bool = False) -> str:
    """`queries/sales/rollup.sql changed: affects 2 jobs: sales.a, sales.b`."""
    count = len(shared.jobs)
    path = f"`{shared.path}`" if code else shared.path
    line = f"{path} {_VERB.get(shared.action, shared.action.value)}: "
    if not count:
        return line + "affects no jobs"
    shown = list(shared.jobs if limit is None else shared.jobs[:limit])
    names = ", ".join(f"`{j}`" if code else j for j in shown)
    more = f" and {count - len(shown)} more" if len(shown) < count else ""
    return line + f"affects {count} job{'s' if count != 1 else ''}: {names}{more}"


SHARED_NOTE = "resolved when a job runs, so these change the next runs of the jobs using them"


def render_text(plan: Plan) -> str:
    lines = [
        f"Plan for {plan.ref} against state serial {plan.base.state_serial} "
        f"(applied: {_short(plan.base.applied_commit)}, main: {_short(plan.base.main_tip)})",
        "",
    ]
    if plan.base.drift:
        lines += [f"Drift: {plan.base.drift}; serve re-applies main to heal it.", ""]
    if not plan.changes and not plan.affects:
        lines.append("No changes. The live jobs match this commit.")
    elif not plan.changes:
        lines += ["No job definitions change.", ""]
    for change in plan.changes:
        lines.append(f"{change.action.symbol} {change.job_id} ({change.action.value})")
        lines += [f"    {_field_line(f)}" for f in change.fields]
        for s in change.schedules:
            where = f" {s.cron} {s.timezone}" if s.action is not Action.DELETE else ""
            lines.append(f"    {s.action.symbol} schedule {s.id} ({s.action.value}){where}")
            if s.next_fire_times:
                lines.append("        next: " + ", ".join(_iso(t) for t in s.next_fire_times))
        for file in change.files:
            lines.append(f"    {file.action.symbol} file {file.path} ({file.action.value})")
            lines += [f"        {line}" for line in file.diff.splitlines()]
        lines.append("")
    if plan.affects:
        lines.append(f"Shared files ({SHARED_NOTE}):")
        lines += [f"  {a.action.symbol} {_affects_line(a)}" for a in plan.affects]
        lines.append("")
    if plan.warnings:
        lines.append("Warnings:")
        lines += [f"  {w.render()}" for w in plan.warnings]
        lines.append("")
    lines.append(_summary_line(plan))
    return "\n".join(lines) + "\n"


def render_markdown(plan: Plan, *, limit: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment: summary table first, then the shared files that changed,
    one collapsible section per job (field, schedule and file diffs, next fire times),
    warnings. Longer than `limit` characters: the jobs that fit, then a last line
    pointing to the full plan; never several comments."""
    head = [
        f"### reconciler plan for `{plan.ref}`",
        "",
        f"Against state serial {plan.base.state_serial} "
        f"(applied `{_short(plan.base.applied_commit)}`, main `{_short(plan.base.main_tip)}`).",
        "",
        "| create | update | delete | unchanged |",
        "|---:|---:|---:|---:|",
        f"| {plan.count(Action.CREATE)} | {plan.count(Action.UPDATE)} | "
        f"{plan.count(Action.DELETE)} | {plan.unchanged} |",
        "",
    ]
    if plan.base.drift:
        head += [f"**Drift**: {plan.base.drift}; serve re-applies main to heal it.", ""]
    if not plan.changes and not plan.affects:
        head += ["No changes.", ""]
    if plan.affects:
        head += [f"**Shared files changed** ({SHARED_NOTE}):", ""]
        head += [
            f"- {_affects_line(a, limit=MARKDOWN_JOBS_PER_FILE, code=True)}" for a in plan.affects
        ]
        head.append("")
    sections = ["\n".join(_job_markdown(c)) + "\n" for c in plan.changes]
    warnings = ""
    if plan.warnings:
        warnings = "\n".join(
            ["**Warnings**", "", *[f"- `{w.render()}`" for w in plan.warnings], ""]
        )
        warnings += "\n"
    summary = _summary_line(plan) + "\n"
    text = "\n".join(head) + "\n" + "".join(sections) + warnings + summary
    if len(text) <= limit:
        return text
    return _truncated(plan, "\n".join(head) + "\n", sections, warnings, summary, limit)


def _truncated(
    plan: Plan, head: str, sections: list[str], warnings: str, summary: str, limit: int
) -> str:
    def note(shown: int) -> str:
        return (
            f"**Plan truncated**: {shown} of {len(sections)} job changes shown, to fit one "
            f"comment. The full plan is the CI artifact `{PLAN_ARTIFACT}` (`plan.json`), or "
            f"run `reconciler plan --ref {plan.commit[:12]} --output json`.\n"
        )

    short_warnings = f"**Warnings**: {len(plan.warnings)} (see the full plan)\n\n"
    budget = limit - len(head) - len(summary) - len(note(len(sections))) - len(short_warnings)
    shown = 0
    for section in sections:
        if len(section) > budget:
            break
        shown += 1
        budget -= len(section)
    body = "".join(sections[:shown])
    if warnings:
        body += warnings if len(warnings) <= budget else short_warnings
    return head + body + summary + "\n" + note(shown)


def _fence(lines: list[str]) -> str:
    """A code fence longer than any backtick run in `lines`, so content cannot close it."""
    ticks = 3
    for line in lines:
        run = 0
        for char in line:
            run = run + 1 if char == "`" else 0
            ticks = max(ticks, run + 1)
    return "`" * ticks


def _job_markdown(change: JobChange) -> list[str]:
    lines = [
        f"<details><summary><code>{change.action.symbol} {change.job_id}</code> "
        f"({change.action.value})</summary>",
        "",
    ]
    body: list[str] = [_field_line(f) for f in change.fields]
    for s in change.schedules:
        body.append(
            f"{s.action.symbol} schedule {s.id} ({s.action.value})"
            + (f" {s.cron} {s.timezone}" if s.action is not Action.DELETE else "")
        )
        if s.next_fire_times:
            body.append("    next: " + ", ".join(_iso(t) for t in s.next_fire_times))
    if body:
        fence = _fence(body)
        lines += [f"{fence}diff", *body, fence, ""]
    for file in change.files:
        diff = file.diff.splitlines()
        fence = _fence(diff)
        lines += [f"`{file.path}` ({file.action.value})", "", f"{fence}diff", *diff, fence, ""]
    lines += ["</details>", ""]
    return lines
