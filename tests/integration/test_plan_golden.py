"""Plans of a repo history with creates, updates, deletes, schedule and file changes are
byte-stable: text, JSON and Markdown equal their golden files (UPDATE_GOLDEN=1 rewrites)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from tests.conftest import commit_tree, make_jobs_repo

GOLDEN = Path(__file__).parent.parent / "testdata" / "plans"

BEFORE = {
    "teams.yaml": "admins: [carol]\nteams:\n  sales: {members: [alice]}\n",
    "queries/sales/rollup.sql": "select 1;\n",
    "schedules/hourly.yaml": 'cron: "0 * * * *"\n',
    "jobs/sales/rollup.yaml": (
        "team: sales\nsql: {query: sales.rollup}\narguments: {day: today}\n"
        'schedules:\n  - {id: nightly, cron: "0 2 * * *", timezone: Europe/Berlin}\n'
    ),
    "jobs/sales/orders.yaml": "team: sales\nsql: {file: orders.sql}\n",
    "jobs/sales/orders.sql": "select status, count(*)\nfrom orders\ngroup by status;\n",
    "jobs/ops/cleanup.yaml": "command: {cmd: echo clean}\nschedules:\n  - {use: hourly}\n",
    "jobs/ops/untouched.yaml": "command: {cmd: echo same}\n",
}

AFTER_CHANGES = {
    # update: a field, a schedule changed, a schedule added
    "jobs/sales/rollup.yaml": (
        "team: sales\nsql: {query: sales.rollup}\narguments: {day: yesterday}\n"
        "timeoutSeconds: 600\n"
        'schedules:\n  - {id: nightly, cron: "30 3 * * *", timezone: Europe/Berlin}\n'
        '  - {id: weekly, cron: "0 6 * * 1", timezone: UTC, concurrencyPolicy: FORBID}\n'
    ),
    # update: only the snapshot file changed
    "jobs/sales/orders.sql": "select status, count(*) as n\nfrom orders\ngroup by status;\n",
    # create
    "jobs/finance/report.yaml": (
        'description: Monthly report\ncommand: {args: [python3, -c, "print(1)"]}\n'
        'schedules:\n  - {id: monthly, cron: "0 6 1 * *", timezone: America/New_York}\n'
    ),
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("plan-golden")
    repo = make_jobs_repo(root / "repo", BEFORE)
    clock = root / "now"
    clock.write_text("2026-03-28T12:00:00Z")
    env = {"RECONCILER_CLOCK_FILE": str(clock), "RECONCILER_DB": f"sqlite:///{root}/state.db"}
    runner = CliRunner(env=env)
    applied = runner.invoke(cli, ["apply", "--yes", "--repo", str(repo), "--as", "carol"])
    assert applied.exit_code == 0, applied.output
    for path, text in AFTER_CHANGES.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    (repo / "jobs/ops/cleanup.yaml").unlink()  # delete
    commit_tree(repo, "change jobs")
    out: dict[str, str] = {}
    for fmt in ("text", "json", "markdown"):
        result = runner.invoke(cli, ["plan", "--repo", str(repo), "--output", fmt])
        assert result.exit_code == 0, result.output
        out[fmt] = result.output
    return out


@pytest.mark.parametrize(("fmt", "suffix"), [("text", "txt"), ("json", "json"), ("markdown", "md")])
def test_plan_output_matches_golden_file(planned: dict[str, str], fmt: str, suffix: str) -> None:
    golden = GOLDEN / f"history.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(planned[fmt])
    assert planned[fmt] == golden.read_text()


def test_plan_orders_changes_by_action_then_job_id(planned: dict[str, str]) -> None:
    body = json.loads(planned["json"])
    keys = [(c["action"], c["jobId"]) for c in body["changes"]]
    assert keys == [
        ("create", "finance.report"),
        ("update", "sales.orders"),
        ("update", "sales.rollup"),
        ("delete", "ops.cleanup"),
    ]
    assert body["summary"] == {"create": 1, "update": 2, "delete": 1, "no-op": 1}
    rollup = body["changes"][2]
    assert [s["id"] for s in rollup["schedules"]] == ["nightly", "weekly"]
    # next 3 fire times of the changed schedule, computed from the fixed clock
    assert rollup["schedules"][0]["nextFireTimes"] == [
        "2026-03-29T01:30:00Z",
        "2026-03-30T01:30:00Z",
        "2026-03-31T01:30:00Z",
    ]
    orders = body["changes"][1]
    assert orders["fields"] == []
    assert "+select status, count(*) as n" in orders["files"][0]["diff"]


SHARED_BEFORE = {
    "teams.yaml": "admins: [carol]\nteams:\n  sales: {members: [alice]}\n",
    "queries/sales/rollup.sql": "select 1;\n",
    "queries/unused.sql": "select 0;\n",
    "profiles/small.yaml": "mode: standalone\nengine: duckdb\n",
    "schedules/hourly.yaml": 'cron: "0 * * * *"\n',
    "jobs/sales/a.yaml": "team: sales\nsql: {query: sales.rollup}\n",
    "jobs/sales/b.yaml": "team: sales\nsql: {query: sales.rollup}\nprofile: small\n",
    "jobs/ops/c.yaml": "command: {cmd: echo c}\nprofile: small\nschedules:\n  - {use: hourly}\n",
    "jobs/ops/d.yaml": "command: {cmd: echo d}\n",
}

SHARED_AFTER = {
    "queries/sales/rollup.sql": "select 2;\n",
    "profiles/small.yaml": "mode: standalone\nengine: duckdb\nconfig: {THREADS: '2'}\n",
    "jobs/ops/d.yaml": "command: {cmd: echo d2}\n",
}


@pytest.fixture(scope="module")
def planned_shared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("plan-golden-shared")
    repo = make_jobs_repo(root / "repo", SHARED_BEFORE)
    clock = root / "now"
    clock.write_text("2026-03-28T12:00:00Z")
    env = {"RECONCILER_CLOCK_FILE": str(clock), "RECONCILER_DB": f"sqlite:///{root}/state.db"}
    runner = CliRunner(env=env)
    applied = runner.invoke(cli, ["apply", "--yes", "--repo", str(repo), "--as", "carol"])
    assert applied.exit_code == 0, applied.output
    for path, text in SHARED_AFTER.items():
        (repo / path).write_text(text)
    (repo / "queries/unused.sql").unlink()
    commit_tree(repo, "change shared files")
    out: dict[str, str] = {}
    for fmt in ("text", "json", "markdown"):
        result = runner.invoke(cli, ["plan", "--repo", str(repo), "--output", fmt])
        assert result.exit_code == 0, result.output
        out[fmt] = result.output
    return out


@pytest.mark.parametrize(("fmt", "suffix"), [("text", "txt"), ("json", "json"), ("markdown", "md")])
def test_plan_of_changed_shared_files_matches_golden_file(
    planned_shared: dict[str, str], fmt: str, suffix: str
) -> None:
    golden = GOLDEN / f"shared.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(planned_shared[fmt])
    assert planned_shared[fmt] == golden.read_text()


def test_plan_lists_the_jobs_each_changed_shared_file_affects(
    planned_shared: dict[str, str],
) -> None:
    body = json.loads(planned_shared["json"])
    assert body["affects"] == [
        {"path": "profiles/small.yaml", "action": "update", "jobs": ["ops.c", "sales.b"]},
        {"path": "queries/sales/rollup.sql", "action": "update", "jobs": ["sales.a", "sales.b"]},
    ]
    assert [c["jobId"] for c in body["changes"]] == ["ops.d"]
    assert (
        "queries/sales/rollup.sql changed: affects 2 jobs: sales.a, sales.b"
        in (planned_shared["text"])
    )
