"""The Markdown plan is one pull-request comment: summary first, collapsible jobs, and a
long plan truncated under the limit with a pointer to the full plan."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.ids import JobId
from reconciler.plan.model import Action, FileChange, JobChange, Plan, PlanBase, SharedFileChange
from reconciler.plan.render import MARKDOWN_LIMIT, PLAN_ARTIFACT, render_markdown

NOW = datetime(2026, 3, 28, 12, tzinfo=UTC)


def plan_with(jobs: int, diff_lines: int) -> Plan:
    diff = "".join(f"+select {i} -- ```\n" for i in range(diff_lines))
    changes = tuple(
        JobChange(
            job_id=JobId(f"team.job{i:05d}"),
            action=Action.UPDATE,
            path=f"jobs/team/job{i:05d}.yaml",
            files=(FileChange(path=f"jobs/team/job{i:05d}.sql", action=Action.UPDATE, diff=diff),),
        )
        for i in range(jobs)
    )
    return Plan(
        ref="HEAD (1234567)",
        commit="1234567" + "0" * 33,
        base=PlanBase(state_serial=3, applied_commit="a" * 40, main_tip="b" * 40),
        generated_at=NOW,
        changes=changes,
        unchanged=7,
        affects=(
            SharedFileChange(
                path="profiles/big.yaml",
                action=Action.UPDATE,
                jobs=tuple(c.job_id for c in changes),
            ),
        ),
    )


def test_a_short_plan_is_rendered_whole_with_the_summary_table_first() -> None:
    text = render_markdown(plan_with(2, 3))
    assert text.index("| create | update | delete | unchanged |") < text.index("<details>")
    assert text.count("<details>") == 2
    assert "truncated" not in text
    assert "````diff" in text  # a fence longer than the backticks inside the diff


def test_a_long_plan_is_truncated_to_one_comment_pointing_to_the_full_plan() -> None:
    plan = plan_with(2000, 20)
    text = render_markdown(plan)
    assert len(text) <= MARKDOWN_LIMIT
    assert text.startswith("### reconciler plan for `HEAD (1234567)`")
    assert "| 0 | 2000 | 0 | 7 |" in text
    assert "affects 2000 jobs: `team.job00000`" in text
    assert "and 1980 more" in text
    shown = text.count("<details>")
    assert 0 < shown < 2000
    assert text.count("</details>") == shown  # no section cut in half
    last = text.rstrip("\n").splitlines()[-1]
    assert f"{shown} of 2000 job changes shown" in last
    assert PLAN_ARTIFACT in last
    assert "reconciler plan --ref 123456700000 --output json" in last
