"""Properties of planning: re-plan after apply is empty; a plan against nothing creates all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.ids import JobId
from reconciler.plan.desired import DesiredJob, RecordedJob, content_hash
from reconciler.plan.diff import plan_changes
from reconciler.plan.model import Action, PlanBase

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BASE = PlanBase(state_serial=0, applied_commit=None, main_tip=None)

ids = st.from_regex(r"[a-z][a-z0-9]{0,5}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)
scalars = st.one_of(st.text(max_size=8), st.integers(-5, 5), st.booleans())
documents = st.fixed_dictionaries(
    {"command": st.fixed_dictionaries({"cmd": st.text(min_size=1, max_size=10)})},
    optional={
        "labels": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
        "arguments": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=3),
        "maxConcurrentRuns": st.integers(1, 5),
        "extra": st.lists(scalars, max_size=3),
    },
)


def to_desired(job_id: str, doc: dict[str, Any]) -> DesiredJob:
    doc = {**doc, "schedules": []}
    path = "jobs/" + job_id.replace(".", "/") + ".yaml"
    return DesiredJob(
        job_id=JobId(job_id),
        path=path,
        definition=doc,
        content_hash=content_hash(doc),
        input_blobs={path: "0" * 40},
    )


def applied(jobs: dict[JobId, DesiredJob]) -> dict[JobId, RecordedJob]:
    return {
        i: RecordedJob(
            job_id=i,
            version="1" * 40,
            content_hash=j.content_hash,
            input_blobs=j.input_blobs,
            definition=j.definition,
        )
        for i, j in jobs.items()
    }


def run(want: dict[JobId, DesiredJob], have: dict[JobId, RecordedJob]):
    return plan_changes(want, have, ref="r", commit="c" * 40, base=BASE, now=NOW, file_texts={})


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(ids, documents, max_size=8), st.dictionaries(ids, documents, max_size=8))
def test_replanning_after_apply_is_empty(before: dict[str, Any], after: dict[str, Any]) -> None:
    old = {JobId(i): to_desired(i, d) for i, d in before.items()}
    new = {JobId(i): to_desired(i, d) for i, d in after.items()}
    first = run(new, applied(old))
    assert first.count(Action.CREATE) == len(set(new) - set(old))
    assert first.count(Action.DELETE) == len(set(old) - set(new))
    assert run(new, applied(new)).changes == ()


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(ids, documents, max_size=8))
def test_plan_is_deterministic_and_totally_ordered(jobs: dict[str, Any]) -> None:
    want = {JobId(i): to_desired(i, d) for i, d in jobs.items()}
    a, b = run(want, {}), run(dict(reversed(list(want.items()))), {})
    assert a == b
    assert [c.job_id for c in a.changes] == sorted(want)
