"""The installed `reconciler` command: plan, apply (saved plans, confirmation, older and
invalid commits, deletes), history and the live state in `jobs list`, on temp jobs repos
with a SQLite store outside the repo and a fixed clock."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.ids import JobId
from reconciler.store import Store
from tests.conftest import commit_tree, make_jobs_repo

RECONCILER = str(Path(sys.executable).parent / "reconciler")
NOW = "2026-01-20T00:00:00Z"
HELLO = "command:\n  cmd: echo hello\n"
DAILY = 'command:\n  cmd: echo daily\nschedules:\n  - {id: nightly, cron: "0 2 * * *"}\n'
AUTHOR = "Test User <test@example.com>"


@dataclass(frozen=True, slots=True)
class Workspace:
    """A jobs repo on main, its store (outside the repo) and the environment of every command."""

    repo: Path
    db_url: str
    env: dict[str, str]
    plans: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RECONCILER, *args],
            cwd=self.repo,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def history(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.ok("history", "--output", "json"))
        return rows

    def serial(self) -> int:
        with Store.open(self.db_url, migrate=False) as store:
            return store.read_state().serial

    def applies(self) -> list[tuple[int, str]]:
        """(serial, commit) of every recorded apply, newest first, read from the store."""
        with Store.open(self.db_url, migrate=False) as store:
            return [(a.serial, a.commit) for a in store.list_applies()]

    def write(self, path: str, text: str) -> None:
        full = self.repo / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text, encoding="utf-8")

    def commit(self, message: str) -> str:
        return commit_tree(self.repo, message)

    def git(self, *args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(self.repo), *args], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()


@pytest.fixture
def ws(tmp_path: Path, git_identity: None) -> Workspace:
    repo = make_jobs_repo(
        tmp_path / "jobs", {"jobs/hello.yaml": HELLO, "jobs/sales/daily.yaml": DAILY}
    )
    clock = tmp_path / "clock"
    clock.write_text(NOW, encoding="utf-8")
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    env = {
        **os.environ,
        "RECONCILER_CLOCK_FILE": str(clock),
        "RECONCILER_DB": db_url,
        "RECONCILER_USER": "ci",
    }
    plans = tmp_path / "plans"
    plans.mkdir()
    return Workspace(repo=repo, db_url=db_url, env=env, plans=plans)


# --- saved plans ---------------------------------------------------------------------------


def test_a_saved_plan_is_refused_after_someone_else_applied_naming_both_serials(
    ws: Workspace,
) -> None:
    p1 = ws.plans / "p1.json"
    ws.ok("plan", "--out", str(p1))
    assert json.loads(p1.read_text())["stateSerial"] == 0
    ws.ok("apply", "--yes")
    result = ws.run("apply", str(p1))
    assert result.returncode == 1
    assert "state serial 0" in result.stderr
    assert "serial 1" in result.stderr
    assert "make a new plan" in result.stderr
    assert ws.serial() == 1
    assert len(ws.applies()) == 1


def test_a_saved_plan_is_refused_after_main_moved_naming_the_main_tip_change(
    ws: Workspace,
) -> None:
    ws.ok("apply", "--yes")
    plan = ws.plans / "plan.json"
    ws.ok("plan", "--out", str(plan))
    old_tip = ws.git("rev-parse", "HEAD")
    assert json.loads(plan.read_text())["stateSerial"] == 1
    ws.write("jobs/hello.yaml", "command:\n  cmd: echo hello again\n")
    new_tip = ws.commit("change hello")
    result = ws.run("apply", str(plan))
    assert result.returncode == 1
    assert f"when main was at {old_tip[:12]}" in result.stderr
    assert f"now at {new_tip[:12]}" in result.stderr
    assert ws.serial() == 1


def test_a_saved_plan_of_an_unmerged_draft_branch_is_refused_as_not_on_main(
    ws: Workspace,
) -> None:
    ws.git("checkout", "--quiet", "-b", "draft")
    ws.write("jobs/hello.yaml", "command:\n  cmd: echo draft\n")
    draft = ws.commit("draft change")
    ws.git("checkout", "--quiet", "main")
    plan = ws.plans / "draft.json"
    ws.ok("plan", "--ref", "draft", "--out", str(plan))
    assert json.loads(plan.read_text())["commit"] == draft
    result = ws.run("apply", str(plan))
    assert result.returncode == 1
    assert f"the saved plan is for {draft[:12]}, which is not on main (a draft)" in result.stderr
    assert ws.applies() == []


def test_a_fresh_saved_plan_applies_and_history_records_commit_user_and_commit_author(
    ws: Workspace,
) -> None:
    tip = ws.git("rev-parse", "HEAD")
    plan = ws.plans / "plan.json"
    ws.ok("plan", "--out", str(plan))
    out = ws.ok("apply", str(plan), "--as", "alice")
    assert f"Applied {tip[:12]} as state serial 1: 2 created, 0 updated, 0 deleted." in out
    assert ws.history() == [
        {
            "serial": 1,
            "commit": tip,
            "mainTip": tip,
            "user": "alice",
            "commitAuthor": AUTHOR,
            "appliedAt": NOW,
            "summary": {"create": 2, "delete": 0, "no-op": 0, "update": 0},
        }
    ]


# --- apply and plan ------------------------------------------------------------------------


def test_apply_without_yes_and_without_a_terminal_exits_1_and_applies_nothing(
    ws: Workspace,
) -> None:
    result = ws.run("apply")
    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert ws.applies() == []
    assert ws.serial() == 0


def test_an_older_commit_is_applied_only_with_allow_older(ws: Workspace) -> None:
    first = ws.git("rev-parse", "HEAD")
    ws.ok("apply", "--yes")
    ws.write("jobs/hello.yaml", "command:\n  cmd: echo newer\n")
    second = ws.commit("newer hello")
    ws.ok("apply", "--yes")
    ws.git("reset", "--quiet", "--hard", "HEAD~1")
    refused = ws.run("apply", "--yes")
    assert refused.returncode == 1
    assert f"{first[:12]} is older than the applied commit {second[:12]}" in refused.stderr
    assert "--allow-older" in refused.stderr
    assert ws.serial() == 2
    out = ws.ok("apply", "--yes", "--allow-older")
    assert f"Applied {first[:12]} as state serial 3: 0 created, 1 updated, 0 deleted." in out
    assert ws.applies() == [(3, first), (2, second), (1, first)]


def test_an_invalid_commit_on_main_is_neither_planned_nor_applied_and_errors_name_file_and_line(
    ws: Workspace,
) -> None:
    ws.ok("apply", "--yes")
    ws.write(
        "jobs/bad.yaml", 'command:\n  cmd: echo bad\nschedules:\n  - {id: x, cron: "0 2 * * *"}\n'
    )
    ws.write("jobs/worse.yaml", "command:\n  cmd: echo a\n  args: [echo, b]\n")
    ws.commit("two broken jobs")
    for command in (["plan"], ["apply", "--yes"]):
        result = ws.run(*command)
        assert result.returncode == 1, command
        assert "2 definition error(s)" in result.stderr
        assert re.search(r"^jobs/bad\.yaml:4:10: schedules\[0\]\.id: 'x'", result.stderr, re.M)
        assert re.search(r"^jobs/worse\.yaml:3:3: command: .*cmd, args", result.stderr, re.M)
        assert "Traceback" not in result.stderr
    assert ws.serial() == 1
    assert len(ws.applies()) == 1


def test_plan_detailed_exitcode_is_2_with_changes_and_0_once_applied_showing_no_changes(
    ws: Workspace,
) -> None:
    assert ws.run("plan", "--detailed-exitcode").returncode == 2
    ws.ok("apply", "--yes")
    result = ws.run("plan", "--detailed-exitcode")
    assert result.returncode == 0, result.stderr
    short = ws.git("rev-parse", "--short=7", "HEAD")
    assert result.stdout == (
        f"Plan for HEAD ({short}) against state serial 1 (applied: {short}, main: {short})\n"
        "\n"
        "No changes. The live jobs match this commit.\n"
        "Plan: 0 to create, 0 to update, 0 to delete, 2 unchanged.\n"
    )


def live_status(ws: Workspace) -> dict[str, str]:
    jobs = json.loads(ws.ok("jobs", "list", "--output", "json"))
    return {job["id"]: job["live"]["status"] for job in jobs}


def test_jobs_list_shows_live_after_apply_and_differs_after_an_unapplied_change(
    ws: Workspace,
) -> None:
    assert live_status(ws) == {"hello": "not applied", "sales.daily": "not applied"}
    ws.ok("apply", "--yes")
    assert live_status(ws) == {"hello": "live", "sales.daily": "live"}
    ws.write("jobs/sales/daily.yaml", DAILY.replace("echo daily", "echo daily v2"))
    ws.commit("change daily")
    assert live_status(ws) == {"hello": "live", "sales.daily": "differs"}


def test_deleting_a_job_file_and_applying_marks_the_job_deleted_and_keeps_its_row(
    ws: Workspace,
) -> None:
    ws.ok("apply", "--yes")
    (ws.repo / "jobs/sales/daily.yaml").unlink()
    ws.commit("delete daily")
    plan = ws.ok("plan")
    assert "- sales.daily (delete)" in plan
    assert "    - schedule nightly (delete)" in plan
    assert "Plan: 0 to create, 0 to update, 1 to delete, 1 unchanged." in plan
    out = ws.ok("apply", "--yes")
    assert "as state serial 2: 0 created, 0 updated, 1 deleted." in out
    with Store.open(ws.db_url, migrate=False) as store:
        assert set(store.read_jobs()) == {"hello"}
        everything = store.read_jobs(include_deleted=True)
    assert set(everything) == {"hello", "sales.daily"}
    deleted = everything[JobId("sales.daily")]
    assert deleted.deleted_at is not None
    assert deleted.deleted_at.isoformat().replace("+00:00", "Z") == NOW
    assert deleted.applied_serial == 1
    assert everything[JobId("hello")].deleted_at is None
    assert "No changes." in ws.ok("plan")
