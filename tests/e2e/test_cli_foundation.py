"""The installed `reconciler` command on temp jobs repos: init, validate, jobs, schedule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import commit_tree

RECONCILER = str(Path(sys.executable).parent / "reconciler")


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("init") / "jobs"
    result = run("init", str(repo), "--as", "carol")
    assert result.returncode == 0, result.stderr
    return repo


def test_init_creates_a_valid_repo_with_one_commit_on_main(initialized: Path) -> None:
    log = subprocess.run(
        ["git", "-C", str(initialized), "log", "--format=%s", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert log.stdout.splitlines() == ["Create jobs repo with reconciler init"]
    status = subprocess.run(
        ["git", "-C", str(initialized), "status", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""
    assert (initialized / ".gitignore").read_text() == ".reconciler/\n"
    assert {p.name for p in (initialized / "schemas").iterdir()} == {
        "job.json",
        "reconciler.json",
        "teams.json",
        "profile.json",
        "schedule.json",
    }
    assert 'admins: ["carol"]' in (initialized / "teams.yaml").read_text()
    result = run("validate", cwd=initialized)
    assert result.returncode == 0, result.stdout
    assert "valid, 4 jobs, 0 warnings" in result.stdout


def test_init_commits_with_a_fallback_identity_when_git_has_none(tmp_path: Path) -> None:
    empty = tmp_path / "empty-gitconfig"
    empty.write_text("")
    env = {
        "GIT_CONFIG_GLOBAL": str(empty),
        "GIT_CONFIG_NOSYSTEM": "1",
        "USER": "ci-bot",
        "HOME": str(tmp_path),
    }
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        env[var] = ""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    result = subprocess.run(
        [RECONCILER, "init", str(tmp_path / "jobs")],
        env={**clean, **{k: v for k, v in env.items() if v}},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    author = subprocess.run(
        ["git", "-C", str(tmp_path / "jobs"), "log", "-1", "--format=%an <%ae>"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert author.stdout.strip() == "ci-bot <ci-bot@localhost>"


def test_init_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = run("init", str(tmp_path))
    assert result.returncode == 1
    assert "is not empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_jobs_list_json_shows_every_job_with_its_next_fire(
    initialized: Path, tmp_path: Path
) -> None:
    clock = tmp_path / "now"
    clock.write_text("2026-03-28T12:00:00Z")
    result = run(
        "jobs",
        "list",
        "--output",
        "json",
        "--repo",
        str(initialized),
        env={"RECONCILER_CLOCK_FILE": str(clock)},
    )
    assert result.returncode == 0, result.stderr
    jobs = {j["id"]: j for j in json.loads(result.stdout)}
    assert sorted(jobs) == [
        "finance.report",
        "ops.cleanup",
        "sales.daily_rollup",
        "sales.orders_snapshot",
    ]
    rollup = jobs["sales.daily_rollup"]
    assert rollup["kind"] == "sql"
    assert rollup["team"] == "sales"
    # 02:00 Europe/Berlin on the night clocks spring forward is 01:00Z
    assert rollup["nextFireAt"] == "2026-03-29T01:00:00Z"
    assert jobs["ops.cleanup"]["schedules"][0]["source"] == "schedules/hourly.yaml"


def test_jobs_list_filters_by_team(initialized: Path) -> None:
    result = run("jobs", "list", "--team", "finance", "--repo", str(initialized))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["ID", "KIND", "TEAM", "SCHEDULES", "NEXT", "FIRE"]
    assert [line.split()[0] for line in lines[1:]] == ["finance.report"]


def test_jobs_show_prints_definition_and_next_times(initialized: Path, tmp_path: Path) -> None:
    clock = tmp_path / "now"
    clock.write_text("2026-01-01T00:00:00Z")
    result = run(
        "jobs",
        "show",
        "finance.report",
        "--output",
        "json",
        "--repo",
        str(initialized),
        env={"RECONCILER_CLOCK_FILE": str(clock)},
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["definition"]["python"] == {"file": "report.py"}
    assert set(body["versionInputs"]) == {"jobs/finance/report.yaml", "jobs/finance/report.py"}
    assert body["schedules"][0]["nextFireTimes"][0] == "2026-01-01T11:00:00Z"
    missing = run("jobs", "show", "finance.reprot", "--repo", str(initialized))
    assert missing.returncode == 1
    assert "did you mean 'finance.report'?" in missing.stderr


def test_schedule_next_for_a_job_uses_the_clock_file(initialized: Path, tmp_path: Path) -> None:
    clock = tmp_path / "now"
    clock.write_text("2026-10-24T12:00:00Z")
    result = run(
        "schedule",
        "next",
        "sales.daily_rollup",
        "-n",
        "2",
        "--output",
        "json",
        "--repo",
        str(initialized),
        env={"RECONCILER_CLOCK_FILE": str(clock)},
    )
    assert result.returncode == 0, result.stderr
    # 02:00 Berlin: CEST (UTC+2) before the fall-back night, CET (UTC+1) after it
    assert json.loads(result.stdout) == ["2026-10-25T00:00:00Z", "2026-10-26T01:00:00Z"]


def test_schedule_next_for_a_cron_expression_is_a_bare_json_array() -> None:
    result = run(
        "schedule",
        "next",
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-03-28T01:30:00Z",
        "-n",
        "3",
        "--output",
        "json",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z",
        "2026-03-31T00:30:00Z",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["schedule", "next", "--cron", "61 * * * *"], "minute: 61 is out of range 0-59"),
        (["schedule", "next", "--cron", "0 * * * *", "--tz", "Mars/Base"], "time zone"),
        (["schedule", "next", "--cron", "0 * * * *", "--after", "yesterday"], "--after"),
        (["schedule", "next"], "give either JOB or --cron"),
        (["validate", "--nope"], "No such option"),
        (["schema", "widget"], "Invalid value"),
    ],
)
def test_usage_errors_exit_1_with_a_message_and_no_traceback(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_outside_a_git_repo_the_error_says_use_repo(tmp_path: Path) -> None:
    result = run("validate", cwd=tmp_path)
    assert result.returncode == 1
    assert "not inside a git repository" in result.stderr
    assert "--repo" in result.stderr


def test_unknown_ref_is_a_clear_error(initialized: Path) -> None:
    result = run("validate", "--ref", "no-such-branch", "--repo", str(initialized))
    assert result.returncode == 1
    assert "unknown ref 'no-such-branch'" in result.stderr


def test_worktree_and_ref_read_other_versions(initialized: Path, tmp_path: Path) -> None:
    repo = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(initialized), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", "-b", "draft"], check=True)
    (repo / "jobs" / "broken.yaml").write_text("command: {cmd: echo}\nschedules: [{id: x}]\n")
    worktree = run("validate", "--worktree", "--repo", str(repo))
    assert worktree.returncode == 1
    assert "jobs/broken.yaml:2:13: schedules[0].cron: missing required field" in worktree.stdout
    head = run("validate", "--repo", str(repo))
    assert head.returncode == 0, head.stdout
    commit_tree(repo, "add a broken job on a draft")
    subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", "main"], check=True)
    draft = run("validate", "--ref", "draft", "--repo", str(repo), "--output", "json")
    assert draft.returncode == 1
    body = json.loads(draft.stdout)
    assert body["ref"].startswith("draft (")
    assert {e["path"] for e in body["errors"]} == {"jobs/broken.yaml"}


def test_schema_prints_a_kind_and_writes_all(tmp_path: Path) -> None:
    printed = run("schema", "job")
    assert printed.returncode == 0
    assert json.loads(printed.stdout)["additionalProperties"] is False
    written = run("schema", "--write", str(tmp_path / "s"))
    assert written.returncode == 0
    assert (tmp_path / "s" / "job.json").read_text() == printed.stdout
