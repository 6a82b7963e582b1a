"""The installed `reconciler` command: check-ownership on real branches (edit, delete, new
job, handover, shared files, teams.yaml, admins, no teams.yaml), codeowners, and the run
commands refusing users outside a job's teams."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import commit_tree, make_jobs_repo

RECONCILER = str(Path(sys.executable).parent / "reconciler")
TEAMS = "admins: [carol]\nteams:\n  sales: {members: [alice, bob]}\n  finance: {members: [dave]}\n"
FILES = {
    "teams.yaml": TEAMS,
    "README.md": "jobs\n",
    "queries/sales/rollup.sql": "select 1 as n\n",
    "profiles/small.yaml": "mode: standalone\nengine: duckdb\n",
    "jobs/sales/daily.yaml": "team: sales\nsharedWith: [finance]\nsql: {query: sales.rollup}\n",
    "jobs/sales/orders.yaml": "team: sales\nsql: {file: orders.sql}\nprofile: small\n",
    "jobs/sales/orders.sql": "select 2 as n\n",
    "jobs/finance/report.yaml": "team: finance\ncommand: {cmd: echo report}\n",
}


def cli(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, *args],
        cwd=repo,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def branch(repo: Path, name: str, files: dict[str, str | None], *, start: str = "main") -> None:
    """A branch from `start` with one commit writing (or deleting, for None) `files`."""
    git(repo, "checkout", "--quiet", "-b", name, start)
    for path, text in files.items():
        full = repo / path
        if text is None:
            full.unlink()
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(text)
    commit_tree(repo, name)
    git(repo, "checkout", "--quiet", "main")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_jobs_repo(tmp_path_factory.mktemp("ownership") / "jobs", FILES)
    branch(
        root,
        "own-edit",
        {"jobs/sales/daily.yaml": FILES["jobs/sales/daily.yaml"] + "suspended: true\n"},
    )
    branch(
        root,
        "trespass",
        {
            "jobs/finance/report.yaml": "team: finance\ncommand: {cmd: echo hacked}\n",
            "jobs/sales/orders.sql": "select 3 as n\n",
            "teams.yaml": TEAMS.replace("[dave]", "[dave, alice]"),
            "queries/sales/rollup.sql": "select 9 as n\n",
            "jobs/finance/new.yaml": "team: finance\ncommand: {cmd: echo new}\n",
            "README.md": "changed\n",
        },
    )
    branch(root, "delete-other", {"jobs/finance/report.yaml": None})
    branch(
        root,
        "handover",
        {"jobs/sales/orders.yaml": "team: finance\nsql: {file: orders.sql}\nprofile: small\n"},
    )
    return root


def test_a_member_may_edit_the_teams_job(repo: Path) -> None:
    result = cli(
        repo, "check-ownership", "--base", "main", "--head", "own-edit", "--author", "alice"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alice may make all 1 changed file(s)" in result.stdout


def test_a_non_member_is_refused_with_every_offending_file_named(repo: Path) -> None:
    args = ["check-ownership", "--base", "main", "--head", "trespass", "--author", "bob"]
    text = cli(repo, *args)
    assert text.returncode == 1
    for path in ["jobs/finance/report.yaml", "jobs/finance/new.yaml", "teams.yaml"]:
        assert path in text.stdout
    assert "README.md" not in text.stdout  # unrestricted
    body = json.loads(cli(repo, *args, "--output", "json").stdout)
    assert body["allowed"] is False
    assert [(v["path"], v["rule"]) for v in body["violations"]] == [
        ("jobs/finance/new.yaml", "new-job"),
        ("jobs/finance/report.yaml", "job-owner"),
        ("teams.yaml", "admin-file"),
    ]
    assert body["violations"][1]["mayChange"] == {"teams": ["finance"], "users": ["carol", "dave"]}
    markdown = cli(repo, *args, "--output", "markdown")
    assert markdown.returncode == 1
    assert "| `teams.yaml` | modified | admin-file |" in markdown.stdout


def test_a_finance_member_may_not_touch_sales_files_or_its_query(repo: Path) -> None:
    result = cli(
        repo,
        "check-ownership",
        "--base",
        "main",
        "--head",
        "trespass",
        "--author",
        "dave",
        "-o",
        "json",
    )
    rules = {(v["path"], v["rule"]) for v in json.loads(result.stdout)["violations"]}
    assert ("jobs/sales/orders.sql", "job-file") in rules
    assert ("queries/sales/rollup.sql", "shared-file") in rules
    assert ("jobs/finance/report.yaml", "job-owner") not in rules


def test_org_admins_may_change_everything(repo: Path) -> None:
    result = cli(
        repo, "check-ownership", "--base", "main", "--head", "trespass", "--author", "carol"
    )
    assert result.returncode == 0
    assert "(org admin)" in result.stdout


def test_deleting_another_teams_job_is_refused(repo: Path) -> None:
    result = cli(
        repo, "check-ownership", "--base", "main", "--head", "delete-other", "--author", "alice"
    )
    assert result.returncode == 1
    assert (
        "jobs/finance/report.yaml (deleted) [job-owner]: deleting job finance.report"
        in result.stdout
    )


def test_after_a_handover_the_previous_team_loses_write_access(repo: Path, tmp_path: Path) -> None:
    handover = ["check-ownership", "--base", "main", "--head", "handover"]
    assert cli(repo, *handover, "--author", "alice").returncode == 0
    assert cli(repo, *handover, "--author", "dave").returncode == 1  # not the old owner
    clone = tmp_path / "clone"
    git(repo, "clone", "--quiet", "--branch", "handover", str(repo), str(clone))
    (clone / "jobs/sales/orders.sql").write_text("select 4 as n\n")
    commit_tree(clone, "after handover")
    after = ["check-ownership", "--base", "origin/handover", "--head", "HEAD"]
    refused = cli(clone, *after, "--author", "alice")
    assert refused.returncode == 1
    assert "jobs/sales/orders.sql" in refused.stdout
    assert cli(clone, *after, "--author", "dave").returncode == 0


def test_without_teams_yaml_everyone_may_change_everything(tmp_path: Path) -> None:
    root = make_jobs_repo(tmp_path / "open", {"jobs/a.yaml": "command: {cmd: echo a}\n"})
    branch(
        root,
        "edit",
        {"jobs/a.yaml": "command: {cmd: echo b}\n", "reconciler.yaml": "timezone: UTC\n"},
    )
    result = cli(root, "check-ownership", "--base", "main", "--head", "edit", "--author", "anyone")
    assert result.returncode == 0
    assert "no teams.yaml" in result.stdout


CODEOWNERS = """\
# Generated by `reconciler codeowners --format github` from teams.yaml and
# the jobs at HEAD ({sha}). Do not edit by hand: regenerate it after changing teams.yaml
# or a job's team. An approximation of what `reconciler check-ownership` enforces in
# CI (the forge accepts any one listed owner). Place it at .github/CODEOWNERS.

# Admin files
/reconciler.yaml @carol
/teams.yaml      @carol
/.github/        @carol
/.gitlab-ci.yml  @carol
/.gitlab/        @carol

# Shared files
/profiles/small.yaml      @alice @bob @carol
/queries/sales/rollup.sql @alice @bob @carol

# Jobs
/jobs/finance/report.yaml @carol @dave
/jobs/sales/daily.yaml    @alice @bob @carol
/jobs/sales/orders.yaml   @alice @bob @carol
/jobs/sales/orders.sql    @alice @bob @carol
"""


def test_codeowners_lists_job_shared_and_admin_files_with_their_owners(
    repo: Path, tmp_path: Path
) -> None:
    result = cli(repo, "codeowners")
    assert result.returncode == 0, result.stderr
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert result.stdout == CODEOWNERS.format(sha=sha)
    out = tmp_path / "CODEOWNERS"
    assert cli(repo, "codeowners", "--format", "gitlab", "--out", str(out)).returncode == 0
    gitlab = out.read_text()
    assert "[Jobs]\n/jobs/finance/report.yaml @carol @dave\n" in gitlab
    assert ".gitlab/CODEOWNERS" in gitlab


@pytest.fixture(scope="module")
def applied(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    db = tmp_path_factory.mktemp("ownership-store") / "state.db"
    env = {"RECONCILER_DB": f"sqlite:///{db}", "RECONCILER_USER": "carol"}
    result = cli(repo, "apply", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    return env


@pytest.mark.parametrize(
    "args",
    [
        ["run", "sales.daily"],
        ["runs", "sales.daily"],
        ["run-info", "sales.daily", "jr_" + "0" * 32],
        ["logs", "sales.daily", "jr_" + "0" * 32],
        ["stop", "sales.daily", "jr_" + "0" * 32],
        ["retry", "sales.daily", "jr_" + "0" * 32],
        ["run", "sales.daily", "--ref", "own-edit"],
    ],
)
def test_run_commands_refuse_users_outside_the_jobs_teams(
    repo: Path, applied: dict[str, str], args: list[str]
) -> None:
    result = cli(repo, *args, "--as", "mallory", env=applied)
    assert result.returncode == 1
    assert "mallory may not" in result.stderr
    assert "team 'sales', shared with 'finance'" in result.stderr


def test_run_commands_allow_owning_and_shared_teams_and_admins(
    repo: Path, applied: dict[str, str]
) -> None:
    for user in ("alice", "dave", "carol"):
        result = cli(repo, "runs", "sales.daily", "--as", user, env=applied)
        assert result.returncode == 0, result.stderr
    refused = cli(repo, "runs", "finance.report", env={**applied, "RECONCILER_USER": "alice"})
    assert refused.returncode == 1
    assert "owned by team 'finance'" in refused.stderr
