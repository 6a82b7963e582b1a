"""Pairing desired jobs with recorded ones and diffing each pair into a plan.

Pure: no I/O; `now` and file texts are passed in. deepdiff is imported only when a
job really changed, so a plan with nothing to update does not pay for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from reconciler.ids import JobId
from reconciler.load.diagnostic import Diagnostic
from reconciler.plan.desired import DesiredJob, RecordedJob
from reconciler.plan.model import (
    Action,
    FieldChange,
    FileChange,
    JobChange,
    Plan,
    PlanBase,
    ScheduleChange,
    SharedFileChange,
)
from reconciler.schedule import next_fire_times

NEXT_FIRES_SHOWN = 3


def pair_jobs(
    desired: Mapping[JobId, DesiredJob], recorded: Mapping[JobId, RecordedJob]
) -> list[tuple[JobId, DesiredJob | None, RecordedJob | None]]:
    """Every job id on either side, sorted, with what each side holds (None: absent)."""
    ids = sorted(set(desired) | set(recorded))
    return [(i, desired.get(i), recorded.get(i)) for i in ids]


def needs_definition(desired: DesiredJob | None, recorded: RecordedJob | None) -> bool:
    """Whether diffing this pair needs the recorded definition."""
    return (
        desired is not None
        and recorded is not None
        and desired.content_hash != recorded.content_hash
    )


def needs_desired_definition(desired: DesiredJob | None, recorded: RecordedJob | None) -> bool:
    """Whether diffing this pair needs the desired definition (a create, or a new hash)."""
    return desired is not None and (
        recorded is None or desired.content_hash != recorded.content_hash
    )


def _definition(job: DesiredJob) -> Mapping[str, Any]:
    if job.definition is None:
        raise ValueError(f"planning {job.job_id} needs its definition; load it without facts")
    return job.definition


def plan_changes(
    desired: Mapping[JobId, DesiredJob],
    recorded: Mapping[JobId, RecordedJob],
    *,
    ref: str,
    commit: str,
    base: PlanBase,
    now: datetime,
    file_texts: Mapping[str, bytes],
    warnings: tuple[Diagnostic, ...] = (),
    stats: Mapping[str, int] | None = None,
) -> Plan:
    """The plan that makes `recorded` equal `desired`.

    `file_texts` maps blob SHAs of changed snapshot files (old and new) to content.
    """
    changes: list[JobChange] = []
    unchanged = 0
    for job_id, want, have in pair_jobs(desired, recorded):
        change = diff_pair(job_id, want, have, now=now, file_texts=file_texts)
        if change is None:
            unchanged += 1
        else:
            changes.append(change)
    changes.sort(key=JobChange.sort_key)
    return Plan(
        ref=ref,
        commit=commit,
        base=base,
        generated_at=now,
        changes=tuple(changes),
        unchanged=unchanged,
        warnings=warnings,
        stats=dict(stats or {}),
    )


def diff_pair(
    job_id: JobId,
    want: DesiredJob | None,
    have: RecordedJob | None,
    *,
    now: datetime,
    file_texts: Mapping[str, bytes],
) -> JobChange | None:
    """The change for one pair, or None when nothing changed."""
    if want is None and have is None:
        return None
    if want is None:
        assert have is not None
        old_schedules = _schedules(have.definition or {})
        return JobChange(
            job_id=job_id,
            action=Action.DELETE,
            path=None,
            schedules=tuple(
                ScheduleChange(
                    id=s, action=Action.DELETE, cron=v.get("cron"), timezone=v.get("timezone")
                )
                for s, v in sorted(old_schedules.items())
            ),
        )
    if have is None:
        return JobChange(
            job_id=job_id,
            action=Action.CREATE,
            path=want.path,
            fields=tuple(
                FieldChange(path=k, action=Action.CREATE, new=_plain(v))
                for k, v in sorted(_definition(want).items())
                if k != "schedules" and v not in ({}, [])
            ),
            files=_file_changes(want, {}, file_texts),
            schedules=_schedule_changes(_definition(want), None, now),
        )
    same_definition = want.content_hash == have.content_hash
    same_files = dict(want.input_blobs) == dict(have.input_blobs)
    if same_definition and same_files:
        return None
    fields: tuple[FieldChange, ...] = ()
    schedules: tuple[ScheduleChange, ...] = ()
    if not same_definition:
        old = have.definition or {}
        fields = diff_definitions(old, _definition(want))
        schedules = _schedule_changes(_definition(want), old, now)
    files = _file_changes(want, have.input_blobs, file_texts)
    if not fields and not files and not schedules:
        return None
    return JobChange(
        job_id=job_id,
        action=Action.UPDATE,
        path=want.path,
        fields=fields,
        files=files,
        schedules=schedules,
    )


def _keyed(definition: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(definition)
    out["schedules"] = _schedules(definition)
    return out


def _schedules(definition: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        s["id"]: {k: v for k, v in s.items() if k != "id"} for s in definition.get("schedules", [])
    }


def diff_definitions(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Field-level changes between two normalized definitions, sorted by path."""
    from deepdiff import DeepDiff

    tree = DeepDiff(_keyed(old), _keyed(new), view="tree")
    out: list[FieldChange] = []
    for report, levels in tree.items():
        if report.endswith("_added"):
            action = Action.CREATE
        elif report.endswith("_removed"):
            action = Action.DELETE
        else:
            action = Action.UPDATE
        for level in levels:
            path = render_path(level.path(output_format="list"))
            old_value = None if action is Action.CREATE else _plain(level.t1)
            new_value = None if action is Action.DELETE else _plain(level.t2)
            out.append(FieldChange(path=path, action=action, old=old_value, new=new_value))
    out.sort(key=lambda f: (f.path, f.action.order))
    return tuple(out)


def _plain(value: Any) -> Any:
    """A JSON value with mapping keys sorted, so output does not depend on where a
    definition came from; deepdiff's marker of a missing side becomes None."""
    if isinstance(value, dict):
        return {k: _plain(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return None


def render_path(parts: list[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _schedule_changes(
    new: Mapping[str, Any], old: Mapping[str, Any] | None, now: datetime
) -> tuple[ScheduleChange, ...]:
    suspended = bool(new.get("suspended"))
    want = _schedules(new)
    have = _schedules(old) if old is not None else {}
    out: list[ScheduleChange] = []
    for sid in sorted(set(want) | set(have)):
        w, h = want.get(sid), have.get(sid)
        if w is None:
            assert h is not None
            out.append(
                ScheduleChange(
                    id=sid, action=Action.DELETE, cron=h.get("cron"), timezone=h.get("timezone")
                )
            )
            continue
        if h == w:
            continue
        action = Action.CREATE if h is None else Action.UPDATE
        times: tuple[datetime, ...] = ()
        if w.get("enabled", True) and not suspended:
            times = tuple(next_fire_times(w["cron"], w["timezone"], now, NEXT_FIRES_SHOWN))
        out.append(
            ScheduleChange(
                id=sid, action=action, cron=w["cron"], timezone=w["timezone"], next_fire_times=times
            )
        )
    return tuple(out)


def _file_changes(
    want: DesiredJob, old_blobs: Mapping[str, str], file_texts: Mapping[str, bytes]
) -> tuple[FileChange, ...]:
    out: list[FileChange] = []
    paths = sorted((set(want.input_blobs) | set(old_blobs)) - {want.path})
    for path in paths:
        new_blob, old_blob = want.input_blobs.get(path), old_blobs.get(path)
        if new_blob == old_blob:
            continue
        action = (
            Action.CREATE
            if old_blob is None
            else Action.DELETE
            if new_blob is None
            else Action.UPDATE
        )
        old_text = _text(file_texts, old_blob)
        new_text = _text(file_texts, new_blob)
        diff = "".join(
            difflib.unified_diff(
                old_text.splitlines(keepends=True),
                new_text.splitlines(keepends=True),
                fromfile="/dev/null" if old_blob is None else f"a/{path}",
                tofile="/dev/null" if new_blob is None else f"b/{path}",
            )
        )
        if diff and not diff.endswith("\n"):
            diff += "\n"
        out.append(FileChange(path=path, action=action, diff=diff))
    return tuple(out)


def _text(file_texts: Mapping[str, bytes], blob: str | None) -> str:
    if blob is None:
        return ""
    data = file_texts.get(blob)
    if data is None:
        return "(content not available)\n"
    return data.decode("utf-8", "replace")


SHARED_PREFIXES = ("profiles/", "queries/", "schedules/")


def is_shared_file(path: str) -> bool:
    """Whether `path` is a saved query, profile or reusable schedule (resolved when a job
    loads or runs, so a change reaches every job using it)."""
    return path.startswith(SHARED_PREFIXES)


def diff_shared_files(
    applied: Mapping[str, str],
    current: Mapping[str, str],
    uses: Mapping[str, Collection[JobId]],
) -> tuple[SharedFileChange, ...]:
    """The shared files whose blob differs between the applied state (`applied`: path ->
    blob) and the commit (`current`), sorted by path, each with the jobs of the commit
    using it (`uses`: path -> job ids), sorted."""
    out: list[SharedFileChange] = []
    for path in sorted(set(applied) | set(current)):
        old, new = applied.get(path), current.get(path)
        if old == new or not is_shared_file(path):
            continue
        action = Action.CREATE if old is None else Action.DELETE if new is None else Action.UPDATE
        out.append(
            SharedFileChange(path=path, action=action, jobs=tuple(sorted(uses.get(path, ()))))
        )
    return tuple(out)
