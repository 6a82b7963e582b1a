"""`plan` reports drift: applied rows edited by hand, or an older commit applied."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from click.testing import CliRunner

from reconciler.cli.main import cli
from tests.conftest import commit_tree, make_jobs_repo


def plan_json(runner: CliRunner, repo: Path) -> dict:  # type: ignore[type-arg]
    result = runner.invoke(cli, ["plan", "--repo", str(repo), "--output", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)  # type: ignore[no-any-return]


def test_a_hand_edited_applied_row_shows_as_drift(tmp_path: Path) -> None:
    repo = make_jobs_repo(tmp_path / "repo", {"jobs/a.yaml": "command: {cmd: echo a}\n"})
    db = tmp_path / "s.db"
    runner = CliRunner(env={"RECONCILER_DB": f"sqlite:///{db}"})
    assert runner.invoke(cli, ["apply", "--yes", "--repo", str(repo)]).exit_code == 0
    assert plan_json(runner, repo)["drift"] is None
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE applied_jobs SET version = 'f' || substr(version, 2)")
    body = plan_json(runner, repo)
    assert body["drift"] == "the applied rows differ from what apply serial 1 wrote"
    text = runner.invoke(cli, ["plan", "--repo", str(repo)]).output
    assert "Drift: the applied rows differ" in text


def test_an_older_commit_applied_with_allow_older_shows_as_drift(tmp_path: Path) -> None:
    repo = make_jobs_repo(tmp_path / "repo", {"jobs/a.yaml": "command: {cmd: echo a}\n"})
    first = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    (repo / "jobs/a.yaml").write_text("command: {cmd: echo b}\n")
    commit_tree(repo, "change a")
    runner = CliRunner(env={"RECONCILER_DB": f"sqlite:///{tmp_path}/s.db"})
    assert runner.invoke(cli, ["apply", "--yes", "--repo", str(repo)]).exit_code == 0
    subprocess.run(["git", "-C", str(repo), "reset", "--quiet", "--hard", first], check=True)
    older = runner.invoke(cli, ["apply", "--yes", "--allow-older", "--repo", str(repo)])
    assert older.exit_code == 0, older.output
    body = plan_json(runner, repo)
    assert body["drift"] is not None
    assert "is older than" in body["drift"]
