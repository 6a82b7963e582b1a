"""The installed `reconciler` command over the GitOps workflow: versions, jobs show
--version, diff, drafts, rollback (git revert and `reconciler rollback`), runs that follow
a moved job, and origin drift — on real git repos with several commits, merges and
branches, a SQLite store outside the repo and a fixed clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler.ids import JobId
from reconciler.store import Store
from tests.conftest import make_jobs_repo

RECONCILER = str(Path(sys.executable).parent / "reconciler")
NOW = "2026-02-01T00:00:00Z"
SQL_JOB = "description: rollup\nsql:\n  file: rollup.sql\n"
DESCRIBED = "description: daily sales rollup\nsql:\n  file: rollup.sql\n"
HELLO = "command:\n  cmd: echo hello\n"


@dataclass(frozen=True, slots=True)
class Workspace:
    """A jobs repo on main, its store (outside the repo) and the environment of every command."""

    repo: Path
    db_url: str
    env: dict[str, str]

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

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--output", "json"))

    def write(self, files: dict[str, str | None]) -> None:
        for path, text in files.items():
            full = self.repo / path
            if text is None:
                full.unlink()
                continue
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(text, encoding="utf-8")

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        out = subprocess.run(
            ["git", "-C", str(self.repo), *args],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **(env or {})},
        )
        return out.stdout.strip()

    def commit(
        self,
        message: str,
        files: dict[str, str | None] | None = None,
        *,
        author: str = "Test User",
        date: str = "2026-01-15T12:00:00+00:00",
    ) -> str:
        """Write `files` (None deletes), commit everything with `message` as `author` on
        `date`, and return the new SHA."""
        self.write(files or {})
        env = {
            "GIT_AUTHOR_NAME": author,
            "GIT_AUTHOR_EMAIL": f"{author.split()[0].lower()}@example.com",
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_DATE": date,
        }
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message, env=env)
        return self.git("rev-parse", "HEAD")

    def store_definition(self, job_id: str) -> Any:
        with Store.open(self.db_url, migrate=False) as store:
            return store.read_jobs([JobId(job_id)])[JobId(job_id)].definition


@pytest.fixture
def ws(tmp_path: Path, git_identity: None) -> Workspace:
    repo = make_jobs_repo(
        tmp_path / "jobs",
        {
            "jobs/hello.yaml": HELLO,
            "jobs/sales/rollup.yaml": SQL_JOB,
            "jobs/sales/rollup.sql": "SELECT 1 AS v;\n",
        },
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
    return Workspace(repo=repo, db_url=db_url, env=env)


def _history(ws: Workspace) -> dict[str, str]:
    """main: initial → edit yaml (alice) → edit sql only (bob) → unrelated job →
    (feature: edit yaml) merged → move jobs/sales/rollup.* to jobs/finance/rollup.*"""
    shas = {"initial": ws.git("rev-parse", "HEAD")}
    shas["describe"] = ws.commit(
        "Describe the rollup\n\nWhy: finance asked for it.",
        {"jobs/sales/rollup.yaml": DESCRIBED},
        author="Alice Doe",
        date="2026-01-16T09:00:00+00:00",
    )
    shas["sql"] = ws.commit(
        "Count orders",
        {"jobs/sales/rollup.sql": "SELECT count(*) AS orders FROM range(3);\n"},
        author="Bob Roe",
        date="2026-01-17T09:00:00+00:00",
    )
    shas["unrelated"] = ws.commit(
        "Say hi",
        {"jobs/hello.yaml": "command:\n  cmd: echo hi\n"},
        date="2026-01-18T09:00:00+00:00",
    )
    ws.git("checkout", "-q", "-b", "feature")
    ws.commit(
        "Label the rollup",
        {"jobs/sales/rollup.yaml": DESCRIBED + "labels: {owner: sales}\n"},
        date="2026-01-19T09:00:00+00:00",
    )
    ws.git("checkout", "-q", "main")
    ws.git("merge", "-q", "--no-ff", "feature", "-m", "Merge feature")
    shas["merge"] = ws.git("rev-parse", "HEAD")
    ws.git("branch", "-q", "-D", "feature")
    ws.write({"jobs/finance/rollup.yaml": (ws.repo / "jobs/sales/rollup.yaml").read_text()})
    ws.write({"jobs/finance/rollup.sql": (ws.repo / "jobs/sales/rollup.sql").read_text()})
    ws.write({"jobs/sales/rollup.yaml": None, "jobs/sales/rollup.sql": None})
    shas["move"] = ws.commit("Move the rollup to finance", date="2026-01-20T09:00:00+00:00")
    return shas


# --- versions, jobs show --version, diff ---------------------------------------------------


def test_versions_lists_the_main_commits_that_changed_a_jobs_yaml_or_snapshot_following_a_move(
    ws: Workspace,
) -> None:
    shas = _history(ws)
    body = ws.json("versions", "finance.rollup")
    listed = [v["version"] for v in body["versions"]]
    assert listed == [shas[k] for k in ("move", "merge", "sql", "describe", "initial")]
    assert body["exists"] is True
    assert body["path"] == "jobs/finance/rollup.yaml"
    newest, _, sql, describe, initial = body["versions"]
    assert newest["jobId"] == "finance.rollup"
    assert initial["jobId"] == "sales.rollup"
    assert initial["path"] == "jobs/sales/rollup.yaml"
    assert describe["author"] == {"name": "Alice Doe", "email": "alice@example.com"}
    assert describe["date"] == "2026-01-16T09:00:00Z"
    assert describe["subject"] == "Describe the rollup"
    assert describe["body"] == "Why: finance asked for it."
    assert describe["restores"] is None
    assert sql["changed"] == ["jobs/sales/rollup.sql"]
    assert set(newest["inputs"]) == {"jobs/finance/rollup.yaml", "jobs/finance/rollup.sql"}

    def grep(*args: str) -> list[str]:
        return [v["version"] for v in ws.json("versions", "finance.rollup", *args)["versions"]]

    # Message text, and definition text that only some versions hold.
    assert grep("--grep", "FINANCE ASKED") == [shas["describe"]]
    assert grep("--grep", "count(*)") == [shas[k] for k in ("move", "merge", "sql")]
    assert grep("--author", "bob") == [shas["sql"]]
    assert grep("--since", "2026-01-17") == [shas[k] for k in ("move", "merge", "sql")]

    text = ws.ok("versions", "finance.rollup")
    assert text.splitlines()[0].split() == ["VERSION", "DATE", "AUTHOR", "SUBJECT"]
    assert f"{shas['initial'][:12]}  2026-01-15T12:00:00Z" in text
    assert "(as sales.rollup)" in text

    # The newest version is what apply records.
    ws.ok("apply", "--yes")
    live = {j["id"]: j["live"] for j in ws.json("jobs", "list")}
    assert live["finance.rollup"]["version"] == shas["move"]

    unknown = ws.run("versions", "finance.rolup")
    assert unknown.returncode == 1
    assert "no job 'finance.rolup'" in unknown.stderr
    assert "did you mean 'finance.rollup'?" in unknown.stderr


def test_jobs_show_version_prints_the_old_definition_and_refuses_a_commit_that_is_not_a_version(
    ws: Workspace,
) -> None:
    shas = _history(ws)
    old = ws.json("jobs", "show", "finance.rollup", "--version", shas["initial"][:10])
    assert old["id"] == "sales.rollup"
    assert old["version"] == shas["initial"]
    assert old["definition"]["description"] == "rollup"
    assert old["versionInputs"].keys() == {"jobs/sales/rollup.yaml", "jobs/sales/rollup.sql"}
    text = ws.ok("jobs", "show", "finance.rollup", "--version", shas["describe"])
    assert "description: daily sales rollup" in text
    assert f"jobs/sales/rollup.yaml at {shas['describe'][:12]}" in text

    refused = ws.run("jobs", "show", "finance.rollup", "--version", shas["unrelated"])
    assert refused.returncode == 1
    assert f"{shas['unrelated'][:12]} is not a version of job finance.rollup" in refused.stderr
    assert shas["sql"][:12] in refused.stderr
    assert shas["move"][:12] in refused.stderr


def test_diff_shows_field_changes_and_a_unified_diff_of_the_snapshot_across_a_move(
    ws: Workspace,
) -> None:
    shas = _history(ws)
    body = ws.json("diff", "finance.rollup", shas["initial"], shas["move"])
    assert body["from"] == {
        "version": shas["initial"],
        "jobId": "sales.rollup",
        "path": "jobs/sales/rollup.yaml",
    }
    assert body["to"]["path"] == "jobs/finance/rollup.yaml"
    fields = {f["path"]: f for f in body["fields"]}
    assert fields["description"] == {
        "path": "description",
        "action": "update",
        "old": "rollup",
        "new": "daily sales rollup",
    }
    assert fields["labels.owner"] == {
        "path": "labels.owner",
        "action": "create",
        "old": None,
        "new": "sales",
    }
    [sql] = body["files"]
    assert sql["path"] == "jobs/finance/rollup.sql"
    assert "--- a/jobs/sales/rollup.sql\n+++ b/jobs/finance/rollup.sql\n" in sql["diff"]
    assert "-SELECT 1 AS v;\n+SELECT count(*) AS orders FROM range(3);\n" in sql["diff"]

    text = ws.ok("diff", "finance.rollup", shas["describe"], shas["sql"])
    assert "~ description" not in text
    assert "+SELECT count(*) AS orders" in text
    same = ws.ok("diff", "finance.rollup", shas["sql"], shas["sql"])
    assert "no changes" in same
    assert ws.run("diff", "finance.rollup", shas["unrelated"], shas["sql"]).returncode == 1


# --- drafts ----------------------------------------------------------------------------------


def test_drafts_lists_local_and_remote_branches_that_change_jobs_with_a_plan_summary(
    ws: Workspace, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    ws.git("remote", "add", "origin", str(remote))
    ws.git("checkout", "-q", "-b", "edit-and-add")
    ws.commit(
        "Edit and add", {"jobs/hello.yaml": "command:\n  cmd: echo hi\n", "jobs/new.yaml": HELLO}
    )
    ws.git("checkout", "-q", "-b", "remote-delete", "main")
    ws.commit("Delete the rollup", {"jobs/sales/rollup.yaml": None, "jobs/sales/rollup.sql": None})
    ws.git("push", "-q", "origin", "main", "remote-delete")
    ws.git("checkout", "-q", "-b", "broken", "main")
    ws.git("branch", "-q", "-D", "remote-delete")
    ws.commit("Break it", {"jobs/bad.yaml": "command: {cmd: [1, 2]}\nnope: 1\n"})
    ws.git("checkout", "-q", "-b", "docs-only", "main")
    ws.commit("Docs", {"README.md": "hello\n"})
    ws.git("checkout", "-q", "-b", "sql-only", "main")
    ws.commit("Tweak SQL", {"jobs/sales/rollup.sql": "SELECT 2 AS v;\n"})
    ws.git("checkout", "-q", "main")
    ws.git("fetch", "-q", "origin")
    ws.git("remote", "set-head", "origin", "main")

    body = ws.json("drafts")
    assert body["main"]["ref"] == "origin/main"
    drafts = {d["branch"]: d for d in body["drafts"]}
    assert list(drafts) == ["broken", "edit-and-add", "sql-only", "origin/remote-delete"]
    edit = drafts["edit-and-add"]
    assert edit["plan"] == {"create": ["new"], "update": ["hello"], "delete": []}
    assert edit["remote"] is False
    assert edit["commits"] == 1
    assert edit["changedFiles"] == ["jobs/hello.yaml", "jobs/new.yaml"]
    assert edit["mergeBase"] == ws.git("rev-parse", "main")
    assert drafts["sql-only"]["plan"] == {"create": [], "update": ["sales.rollup"], "delete": []}
    assert drafts["origin/remote-delete"]["remote"] is True
    assert drafts["origin/remote-delete"]["plan"]["delete"] == ["sales.rollup"]
    assert drafts["broken"]["valid"] is False
    assert drafts["broken"]["plan"] is None
    assert drafts["broken"]["errors"] >= 1

    text = ws.ok("drafts")
    assert "+1 ~1 -0  +new ~hello" in text
    assert "invalid: " in text


# --- rollback ----------------------------------------------------------------------------


def test_git_revert_then_apply_restores_the_earlier_definition(ws: Workspace) -> None:
    ws.ok("apply", "--yes")
    before = ws.store_definition("hello")
    edit = ws.commit("Say hi", {"jobs/hello.yaml": "command:\n  cmd: echo hi\n"})
    ws.ok("apply", "--yes")
    assert ws.store_definition("hello")["command"]["cmd"] == "echo hi"

    ws.git("revert", "--no-edit", edit)
    plan = ws.json("plan")
    assert plan["summary"]["update"] == 1
    [change] = plan["changes"]
    assert change["jobId"] == "hello"
    assert {"path": "command.cmd", "action": "update", "old": "echo hi", "new": "echo hello"} in (
        change["fields"]
    )
    ws.ok("apply", "--yes")
    assert ws.store_definition("hello") == before
    assert ws.json("plan")["summary"]["update"] == 0


def _two_versions(ws: Workspace) -> tuple[str, str]:
    """hello v1 = `echo hello` (the initial commit); v2 adds a snapshot-less change and
    a python file it names; returns (v1, v2)."""
    v1 = ws.git("rev-parse", "HEAD")
    v2 = ws.commit(
        "Switch hello to python",
        {"jobs/hello.yaml": "python:\n  file: hello.py\n", "jobs/hello.py": "print('hi')\n"},
    )
    return v1, v2


def test_rollback_writes_a_branch_commit_with_the_trailer_and_leaves_the_checkout_alone(
    ws: Workspace,
) -> None:
    v1, v2 = _two_versions(ws)
    ws.write({"notes.txt": "uncommitted\n", "jobs/hello.yaml": "command:\n  cmd: echo dirty\n"})
    status_before = ws.git("status", "--porcelain")

    result = ws.json("rollback", "hello", "--to", v1[:8])
    branch = f"rollback/hello-{v1[:12]}"
    assert result["branch"] == branch
    assert result["version"] == v1
    assert result["parent"] == v2
    assert result["restored"] == ["jobs/hello.yaml"]
    assert result["deleted"] == ["jobs/hello.py"]
    commit = result["commit"]
    assert ws.git("rev-parse", branch) == commit
    assert ws.git("log", "-1", "--format=%B", commit) == (
        f"Roll back hello to {v1[:12]}\n\nRestores: hello@{v1}"
    )
    assert ws.git("rev-parse", "HEAD") == v2
    assert ws.git("symbolic-ref", "HEAD") == "refs/heads/main"
    assert ws.git("status", "--porcelain") == status_before
    assert ws.git("diff", "--name-only", v2, commit).splitlines() == [
        "jobs/hello.py",
        "jobs/hello.yaml",
    ]
    assert ws.git("show", f"{commit}:jobs/hello.yaml") == HELLO.strip()
    # Not on main until merged: the versions of hello are unchanged.
    assert ws.json("versions", "hello")["versions"][0]["version"] == v2

    again = ws.run("rollback", "hello", "--to", v1)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    refused = ws.run("rollback", "sales.rollup", "--to", v2, "--branch", "y")
    assert refused.returncode == 1
    assert f"{v2[:12]} is not a version of job sales.rollup" in refused.stderr
    assert ws.git("branch", "--list", "y") == ""
    unchanged = ws.run("rollback", "hello", "--to", v2, "--branch", "z")
    assert unchanged.returncode == 1
    assert "nothing to roll back" in unchanged.stderr


def test_rollback_commit_on_main_goes_live_and_run_info_shows_what_it_restores(
    ws: Workspace,
) -> None:
    v1, _ = _two_versions(ws)
    ws.ok("apply", "--yes")
    ws.write({"notes.txt": "keep me\n"})
    ws.write({"jobs/hello.py": "print('dirty')\n"})
    dirty = ws.run("rollback", "hello", "--to", v1, "--commit")
    assert dirty.returncode == 1
    assert "uncommitted changes to the job's files: jobs/hello.py" in dirty.stderr
    ws.git("checkout", "--", "jobs/hello.py")

    result = ws.json("rollback", "hello", "--to", v1, "--commit")
    commit = result["commit"]
    assert result["branch"] == "main"
    assert ws.git("rev-parse", "HEAD") == commit
    assert (ws.repo / "jobs/hello.yaml").read_text() == HELLO
    assert not (ws.repo / "jobs/hello.py").exists()
    assert ws.git("status", "--porcelain") == "?? notes.txt"

    [newest, *_] = ws.json("versions", "hello")["versions"]
    assert newest["version"] == commit
    assert newest["restores"] == f"hello@{v1}"
    ws.ok("apply", "--yes")
    run = json.loads(ws.ok("run", "hello", "--wait", "--output", "json"))
    assert run["version"] == commit
    info = ws.json("run-info", "hello", run["id"])
    assert info["version"] == commit
    assert info["restores"] == f"hello@{v1}"
    [listed] = ws.json("runs", "hello")["jobRuns"]
    assert listed["restores"] == f"hello@{v1}"


def test_runs_of_a_moved_job_include_the_runs_recorded_under_its_old_id(ws: Workspace) -> None:
    ws.ok("apply", "--yes")
    old = json.loads(ws.ok("run", "hello", "--wait", "--output", "json"))
    ws.write({"jobs/greet/hello.yaml": HELLO, "jobs/hello.yaml": None})
    ws.commit("Move hello under greet")
    ws.ok("apply", "--yes")
    new = json.loads(ws.ok("run", "greet.hello", "--wait", "--output", "json"))
    runs = ws.json("runs", "greet.hello")["jobRuns"]
    # Both runs were created at the clock file's fixed instant: their order is by id.
    assert sorted((r["id"], r["jobName"]) for r in runs) == sorted(
        [(new["id"], "greet.hello"), (old["id"], "hello")]
    )


# --- drift -------------------------------------------------------------------------------


def _origin_repo(tmp_path: Path) -> Path:
    return make_jobs_repo(tmp_path / "analytics", {"sql/rollup.sql": "SELECT 1 AS v;\n"})


def test_drift_reports_same_repo_and_other_repo_origins_with_a_diff_and_exit_codes(
    ws: Workspace, tmp_path: Path
) -> None:
    other = _origin_repo(tmp_path)
    origin_other = f"{{repo: '{other}', ref: main, path: sql/rollup.sql}}"
    ws.commit(
        "Track origins",
        {
            "shared/rollup.sql": "SELECT 1 AS v;\n",
            "jobs/sales/rollup.yaml": SQL_JOB + "  origin: {path: shared/rollup.sql}\n",
            "jobs/ext.yaml": f"sql:\n  file: ext.sql\n  origin: {origin_other}\n",
            "jobs/ext.sql": "SELECT 1 AS v;\n",
        },
    )
    clean = ws.run("drift", "--detailed-exitcode", "--output", "json")
    assert clean.returncode == 0, clean.stderr
    body = json.loads(clean.stdout)
    assert body["summary"] == {"in-sync": 2, "drifted": 0, "error": 0}
    ext = body["snapshots"][0]
    assert ext["jobId"] == "ext"
    assert ext["snapshot"] == "jobs/ext.sql"
    assert ext["origin"] == {"repo": str(other), "ref": "main", "path": "sql/rollup.sql"}
    assert (
        ext["originCommit"]
        == subprocess.run(
            ["git", "-C", str(other), "rev-parse", "main"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    assert (ws.repo / ".reconciler" / "origins").is_dir()

    (other / "sql/rollup.sql").write_text("SELECT 2 AS v;\n")
    subprocess.run(["git", "-C", str(other), "commit", "-qam", "two"], check=True)
    ws.commit("Edit shared", {"shared/rollup.sql": "SELECT 3 AS v;\n"})
    drifted = ws.run("drift", "--detailed-exitcode", "--output", "json")
    assert drifted.returncode == 2, drifted.stderr
    entries = {e["jobId"]: e for e in json.loads(drifted.stdout)["snapshots"]}
    assert entries["ext"]["status"] == "drifted"
    assert "--- a/jobs/ext.sql\n+++ b/sql/rollup.sql\n" in entries["ext"]["diff"]
    assert "-SELECT 1 AS v;\n+SELECT 2 AS v;\n" in entries["ext"]["diff"]
    assert entries["sales.rollup"]["status"] == "drifted"
    assert "+SELECT 3 AS v;" in entries["sales.rollup"]["diff"]
    plain = ws.run("drift")
    assert plain.returncode == 0
    assert "drifted   sales.rollup  jobs/sales/rollup.sql <- shared/rollup.sql" in plain.stdout
    assert "2 snapshot(s) with an origin" in plain.stdout


def test_drift_lists_an_unreachable_origin_as_an_error_and_exits_1_only_when_nothing_was_checked(
    ws: Workspace, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-repo"
    ws.commit(
        "Unreachable origin",
        {
            "jobs/ext.yaml": f"sql:\n  file: ext.sql\n  origin: {{repo: '{missing}', path: x}}\n",
            "jobs/ext.sql": "SELECT 1;\n",
        },
    )
    only = ws.run("drift", "--output", "json")
    assert only.returncode == 1
    [entry] = json.loads(only.stdout)["snapshots"]
    assert entry["status"] == "error"
    assert str(missing) in entry["error"]

    ws.commit(
        "Same-repo origin",
        {
            "shared/rollup.sql": "SELECT 1 AS v;\n",
            "jobs/sales/rollup.yaml": SQL_JOB + "  origin: {path: shared/rollup.sql}\n",
        },
    )
    mixed = ws.run("drift", "--detailed-exitcode", "--output", "json")
    assert mixed.returncode == 0, mixed.stderr
    assert json.loads(mixed.stdout)["summary"] == {"in-sync": 1, "drifted": 0, "error": 1}
