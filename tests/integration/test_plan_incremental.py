"""Only changed files are parsed: a plan reuses the facts recorded by apply (shared
through the store) and the local parse cache, re-checking cross-file rules on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from tests.conftest import commit_tree, make_jobs_repo

FILES = {
    "teams.yaml": "admins: [carol]\nteams:\n  sales: {members: [alice]}\n  ops: {members: [bob]}\n",
    "queries/sales/rollup.sql": "select 1;\n",
    "schedules/hourly.yaml": 'cron: "0 * * * *"\n',
    **{
        f"jobs/batch/job{i:02d}.yaml": (
            f"team: {'sales' if i % 2 else 'ops'}\ncommand: {{cmd: echo {i}}}\n"
            'schedules:\n  - {id: nightly, cron: "0 2 * * *"}\n'
        )
        for i in range(20)
    },
    "jobs/sales/rollup.yaml": "team: sales\nsql: {query: sales.rollup}\n",
    "jobs/ops/hourly.yaml": "command: {cmd: echo tick}\nschedules:\n  - {use: hourly}\n",
    "jobs/ops/snap.yaml": "sql: {file: snap.sql}\n",
    "jobs/ops/snap.sql": "select 2;\n",
}


@pytest.fixture
def applied(tmp_path: Path) -> tuple[Path, CliRunner]:
    repo = make_jobs_repo(tmp_path / "repo", FILES)
    clock = tmp_path / "now"
    clock.write_text("2026-05-01T00:00:00Z")
    runner = CliRunner(
        env={"RECONCILER_CLOCK_FILE": str(clock), "RECONCILER_DB": f"sqlite:///{tmp_path}/s.db"}
    )
    result = runner.invoke(cli, ["apply", "--yes", "--repo", str(repo)])
    assert result.exit_code == 0, result.output
    return repo, runner


def plan_json(runner: CliRunner, repo: Path) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(cli, ["plan", "--repo", str(repo), "--output", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def forget_local_cache(repo: Path) -> None:
    shutil.rmtree(repo / ".reconciler" / "cache", ignore_errors=True)


def test_a_plan_after_one_changed_file_parses_one_file_even_on_a_fresh_machine(
    applied: tuple[Path, CliRunner],
) -> None:
    repo, runner = applied
    (repo / "jobs/batch/job07.yaml").write_text("team: sales\ncommand: {cmd: echo seven}\n")
    commit_tree(repo, "change one job")
    forget_local_cache(repo)  # a CI machine that shares only the store
    body = plan_json(runner, repo)
    assert body["stats"]["filesParsed"] == 1
    assert [(c["action"], c["jobId"]) for c in body["changes"]] == [("update", "batch.job07")]
    again = plan_json(runner, repo)
    assert again["stats"]["filesParsed"] == 0  # now in the local cache
    assert {k: v for k, v in again.items() if k != "stats"} == {
        k: v for k, v in body.items() if k != "stats"
    }


def test_plan_output_is_the_same_with_and_without_recorded_facts(
    applied: tuple[Path, CliRunner], tmp_path: Path
) -> None:
    repo, runner = applied
    (repo / "jobs/batch/job03.yaml").write_text("team: ops\ncommand: {cmd: echo three}\n")
    (repo / "jobs/ops/snap.sql").write_text("select 3;\n")
    commit_tree(repo, "change")
    warm = runner.invoke(cli, ["plan", "--repo", str(repo)]).output
    forget_local_cache(repo)
    cold_store = tmp_path / "cold.db"
    cold_runner = CliRunner(env={**runner.env, "RECONCILER_DB": f"sqlite:///{cold_store}"})
    cold = cold_runner.invoke(cli, ["plan", "--repo", str(repo), "--output", "json"])
    assert json.loads(cold.output)["stats"]["filesParsed"] >= 20
    forget_local_cache(repo)
    fresh = runner.invoke(cli, ["plan", "--repo", str(repo)]).output
    assert warm == fresh
    assert "~ file jobs/ops/snap.sql (update)" in warm


def test_a_changed_reusable_schedule_reparses_only_the_jobs_using_it(
    applied: tuple[Path, CliRunner],
) -> None:
    repo, runner = applied
    (repo / "schedules/hourly.yaml").write_text('cron: "30 * * * *"\n')
    commit_tree(repo, "move the hourly schedule")
    forget_local_cache(repo)
    body = plan_json(runner, repo)
    assert [(c["action"], c["jobId"]) for c in body["changes"]] == [("update", "ops.hourly")]
    fields = body["changes"][0]["fields"]
    assert fields[0]["path"] == "schedules.hourly.cron"
    assert body["stats"]["filesParsed"] == 2  # the schedule file and the one job using it


def test_deleting_a_saved_query_fails_an_unchanged_job_with_its_position(
    applied: tuple[Path, CliRunner],
) -> None:
    repo, runner = applied
    (repo / "queries/sales/rollup.sql").unlink()
    commit_tree(repo, "drop the query")
    result = runner.invoke(cli, ["plan", "--repo", str(repo)])
    assert result.exit_code == 1
    assert "jobs/sales/rollup.yaml:2:14: sql.query: saved query 'sales.rollup' does not exist" in (
        result.output
    )


def test_removing_a_team_fails_the_unchanged_jobs_that_name_it(
    applied: tuple[Path, CliRunner],
) -> None:
    repo, runner = applied
    (repo / "teams.yaml").write_text("admins: [carol]\nteams:\n  sales: {members: [alice]}\n")
    commit_tree(repo, "drop team ops")
    result = runner.invoke(cli, ["plan", "--repo", str(repo)])
    assert result.exit_code == 1
    assert result.output.count("team 'ops' is not defined in teams.yaml") == 10


def test_deleting_a_snapshot_file_fails_the_job_that_names_it(
    applied: tuple[Path, CliRunner],
) -> None:
    repo, runner = applied
    (repo / "jobs/ops/snap.sql").unlink()
    commit_tree(repo, "drop the snapshot")
    result = runner.invoke(cli, ["plan", "--repo", str(repo)])
    assert result.exit_code == 1
    assert "jobs/ops/snap.yaml:1:13: sql.file: file 'jobs/ops/snap.sql' does not exist" in (
        result.output
    )
