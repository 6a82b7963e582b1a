"""The pure plan core: pairing, field diffs, schedule and file changes, ordering."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.ids import JobId
from reconciler.plan.desired import DesiredJob, RecordedJob, content_hash
from reconciler.plan.diff import diff_definitions, plan_changes
from reconciler.plan.model import Action, PlanBase

NOW = datetime(2026, 3, 28, 12, tzinfo=UTC)
BASE = PlanBase(state_serial=3, applied_commit="a" * 40, main_tip="b" * 40)


def definition(cmd: str = "echo", cron: str = "0 2 * * *", **extra: Any) -> dict[str, Any]:
    return {
        "command": {"cmd": cmd},
        "schedules": [{"id": "nightly", "cron": cron, "timezone": "UTC", "enabled": True}],
        **extra,
    }


def desired(job_id: str, doc: dict[str, Any], blobs: dict[str, str] | None = None) -> DesiredJob:
    path = f"jobs/{job_id}.yaml"
    return DesiredJob(
        job_id=JobId(job_id),
        path=path,
        definition=doc,
        content_hash=content_hash(doc),
        input_blobs=blobs or {path: "1" * 40},
    )


def recorded(want: DesiredJob) -> RecordedJob:
    return RecordedJob(
        job_id=want.job_id,
        version="c" * 40,
        content_hash=want.content_hash,
        input_blobs=want.input_blobs,
        definition=want.definition,
    )


def plan(want: list[DesiredJob], have: list[RecordedJob], texts: dict[str, bytes] | None = None):
    return plan_changes(
        {d.job_id: d for d in want},
        {r.job_id: r for r in have},
        ref="main",
        commit="b" * 40,
        base=BASE,
        now=NOW,
        file_texts=texts or {},
    )


def test_equal_sides_plan_nothing() -> None:
    jobs = [desired("a", definition()), desired("b", definition("x"))]
    result = plan(jobs, [recorded(j) for j in jobs])
    assert result.changes == ()
    assert result.unchanged == 2


def test_changes_are_ordered_by_action_then_id() -> None:
    keep = desired("m", definition())
    result = plan(
        [
            desired("z", definition()),
            desired("a", definition()),
            desired("m", definition("changed")),
        ],
        [recorded(keep), recorded(desired("d", definition()))],
    )
    assert [(c.action, c.job_id) for c in result.changes] == [
        (Action.CREATE, "a"),
        (Action.CREATE, "z"),
        (Action.UPDATE, "m"),
        (Action.DELETE, "d"),
    ]


def test_field_diff_names_paths_and_keys_schedules_by_id() -> None:
    old = definition("echo a", labels={"x": "1"})
    new = definition("echo b", cron="30 3 * * *", description="new")
    fields = {f.path: f for f in diff_definitions(old, new)}
    assert fields["command.cmd"].action is Action.UPDATE
    assert (fields["command.cmd"].old, fields["command.cmd"].new) == ("echo a", "echo b")
    assert fields["schedules.nightly.cron"].new == "30 3 * * *"
    assert fields["description"].action is Action.CREATE
    assert fields["labels"].action is Action.DELETE


def test_changed_schedule_shows_next_three_fire_times() -> None:
    old = desired("a", definition())
    new = desired("a", definition(cron="0 5 * * *"))
    [change] = plan([new], [recorded(old)]).changes
    [schedule] = change.schedules
    assert schedule.action is Action.UPDATE
    assert [t.isoformat() for t in schedule.next_fire_times] == [
        "2026-03-29T05:00:00+00:00",
        "2026-03-30T05:00:00+00:00",
        "2026-03-31T05:00:00+00:00",
    ]


def test_suspended_job_shows_no_next_fire_times() -> None:
    [change] = plan([desired("a", definition(suspended=True))], []).changes
    assert change.schedules[0].next_fire_times == ()


def test_snapshot_file_change_alone_is_an_update_with_a_unified_diff() -> None:
    doc = definition()
    old = desired("a", doc, {"jobs/a.yaml": "1" * 40, "jobs/a.sql": "2" * 40})
    new = desired("a", doc, {"jobs/a.yaml": "1" * 40, "jobs/a.sql": "3" * 40})
    texts = {"2" * 40: b"select 1;\n", "3" * 40: b"select 2;\n"}
    [change] = plan([new], [recorded(old)], texts).changes
    assert change.action is Action.UPDATE
    assert change.fields == ()
    [file] = change.files
    assert file.path == "jobs/a.sql"
    assert "-select 1;\n+select 2;\n" in file.diff


def test_deleted_job_lists_its_schedules_as_deleted() -> None:
    [change] = plan([], [recorded(desired("gone", definition()))]).changes
    assert change.action is Action.DELETE
    assert [(s.id, s.action) for s in change.schedules] == [("nightly", Action.DELETE)]


def test_content_hash_ignores_key_order() -> None:
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})
