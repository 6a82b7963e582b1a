"""Rendering a plan as text (terminals), JSON (machines, saved plans) and Markdown (PR comments).

Documented order: changes by action (create, update, delete) then job id; fields by
path; files by path; schedules by id; warnings by path, line, column. Pure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from reconciler.plan.model import Action, FieldChange, JobChange, Plan

PLAN_FORMAT = 1


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
        "generatedAt": _iso(plan.generated_at),
        "summary": plan.summary(),
        "changes": [_change_json(c) for c in plan.changes],
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


def render_text(plan: Plan) -> str:
    lines = [
        f"Plan for {plan.ref} against state serial {plan.base.state_serial} "
        f"(applied: {_short(plan.base.applied_commit)}, main: {_short(plan.base.main_tip)})",
        "",
    ]
    if not plan.changes:
        lines.append("No changes. The live jobs match this commit.")
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
    if plan.warnings:
        lines.append("Warnings:")
        lines += [f"  {w.render()}" for w in plan.warnings]
        lines.append("")
    lines.append(_summary_line(plan))
    return "\n".join(lines) + "\n"


def render_markdown(plan: Plan) -> str:
    """A pull-request comment: summary table first, then one collapsible section per job."""
    lines = [
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
    if not plan.changes:
        lines += ["No changes.", ""]
    for change in plan.changes:
        lines.append(
            f"<details><summary><code>{change.action.symbol} {change.job_id}</code> "
            f"({change.action.value})</summary>"
        )
        lines.append("")
        body: list[str] = [_field_line(f) for f in change.fields]
        for s in change.schedules:
            body.append(
                f"{s.action.symbol} schedule {s.id} ({s.action.value})"
                + (f" {s.cron} {s.timezone}" if s.action is not Action.DELETE else "")
            )
            if s.next_fire_times:
                body.append("    next: " + ", ".join(_iso(t) for t in s.next_fire_times))
        if body:
            lines += ["```diff", *body, "```", ""]
        for file in change.files:
            lines += [
                f"`{file.path}` ({file.action.value})",
                "",
                "```diff",
                *file.diff.splitlines(),
                "```",
                "",
            ]
        lines += ["</details>", ""]
    if plan.warnings:
        lines += ["**Warnings**", ""]
        lines += [f"- `{w.render()}`" for w in plan.warnings]
        lines.append("")
    lines.append(_summary_line(plan))
    return "\n".join(lines) + "\n"
