"""Saved queries and profiles are resolved at dispatch: editing one reaches the next run
of every job using it without a new job version, and the run freezes what it resolved
with its hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from tests.conftest import commit_tree, make_jobs_repo

FILES = {
    "queries/sales/total.sql": "SELECT 1 AS total;\n",
    "profiles/small.yaml": 'mode: standalone\nconfig: {THREADS: "1"}\n',
    "jobs/sales/a.yaml": "sql: {query: sales.total}\nprofile: small\n",
    "jobs/sales/b.yaml": "sql: {query: sales.total}\nprofile: small\n",
    "jobs/ops/c.yaml": "command: {cmd: 'echo c'}\nprofile: small\n",
}


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, CliRunner]:
    repo = make_jobs_repo(tmp_path / "repo", FILES)
    runner = CliRunner(env={"RECONCILER_DB": f"sqlite:///{tmp_path}/state.db"})
    assert runner.invoke(cli, ["apply", "--yes", "--repo", str(repo)]).exit_code == 0
    return repo, runner


def run_json(runner: CliRunner, repo: Path, job: str) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(cli, ["run", job, "--wait", "--output", "json", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def versions(runner: CliRunner, repo: Path) -> dict[str, str]:
    result = runner.invoke(cli, ["jobs", "list", "--output", "json", "--repo", str(repo)])
    return {j["id"]: j["live"]["version"] for j in json.loads(result.output)}


def test_an_edited_saved_query_reaches_the_next_run_of_every_job_using_it(
    workspace: tuple[Path, CliRunner],
) -> None:
    repo, runner = workspace
    before = {job: run_json(runner, repo, job) for job in ("sales.a", "sales.b")}
    live_before = versions(runner, repo)
    (repo / "queries/sales/total.sql").write_text("SELECT 2 AS total;\n")
    commit_tree(repo, "change the saved query")
    plan = runner.invoke(cli, ["plan", "--repo", str(repo)])
    assert "queries/sales/total.sql changed: affects 2 jobs: sales.a, sales.b" in plan.output
    assert runner.invoke(cli, ["apply", "--yes", "--repo", str(repo)]).exit_code == 0
    assert versions(runner, repo) == live_before  # no new job version
    for job in ("sales.a", "sales.b"):
        after = run_json(runner, repo, job)
        old_sql, new_sql = before[job]["snapshots"]["sql"], after["snapshots"]["sql"]
        assert old_sql["text"] == "SELECT 1 AS total;\n"
        assert new_sql["text"] == "SELECT 2 AS total;\n"
        assert new_sql["sha256"] != old_sql["sha256"]
        assert after["version"] == before[job]["version"]
        assert after["result"]["preview"] == [[2]]


def test_an_edited_profile_changes_the_next_run_of_every_job_using_it(
    workspace: tuple[Path, CliRunner],
) -> None:
    repo, runner = workspace
    jobs = ("sales.a", "sales.b", "ops.c")
    before = {job: run_json(runner, repo, job)["profile"] for job in jobs}
    live_before = versions(runner, repo)
    (repo / "profiles/small.yaml").write_text('mode: standalone\nconfig: {THREADS: "4"}\n')
    commit_tree(repo, "more threads")
    assert runner.invoke(cli, ["apply", "--yes", "--repo", str(repo)]).exit_code == 0
    assert versions(runner, repo) == live_before
    for job in jobs:
        after = run_json(runner, repo, job)["profile"]
        assert before[job]["document"]["config"] == {"THREADS": "1"}
        assert after["document"]["config"] == {"THREADS": "4"}
        assert after["sha256"] != before[job]["sha256"]
        assert after["name"] == "small"
