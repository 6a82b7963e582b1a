"""The pull-request workflow `reconciler init` writes, run as CI would: the same `run:`
steps of .github/workflows/reconciler.yml (minus installing and posting) against a clone
of a jobs repo with a shared store, for a team member's branch, the merge and apply on
main, and a non-member's branch that check-ownership rejects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent
WORKFLOW = ".github/workflows/reconciler.yml"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def steps(repo: Path, job: str) -> dict[str, str]:
    """The `run:` scripts of a workflow job, by step id."""
    workflow: dict[str, Any] = yaml.safe_load((repo / WORKFLOW).read_text())
    return {s["id"]: s["run"] for s in workflow["jobs"][job]["steps"] if "id" in s and "run" in s}


def run_step(checkout: Path, script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert "${{" not in script  # event values reach scripts through env only
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=checkout,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def pr_checks(
    checkout: Path, env: dict[str, str], author: str
) -> list[subprocess.CompletedProcess[str]]:
    """validate, check-ownership, plan: stop at the first failing step, as CI does."""
    scripts = steps(checkout, "plan")
    done = []
    for step in ("validate", "ownership", "plan"):
        result = run_step(checkout, scripts[step], {**env, "BASE": "main", "PR_AUTHOR": author})
        done.append(result)
        if result.returncode != 0:
            break
    return done


@pytest.mark.usefixtures("git_identity")
def test_pull_request_steps_plan_for_a_member_apply_on_merge_and_reject_a_non_member(
    tmp_path: Path,
) -> None:
    origin = tmp_path / "origin"
    init = run_step(tmp_path, f"reconciler init {origin} --as carol", {})
    assert init.returncode == 0, init.stderr
    assert (origin / ".gitlab-ci.yml").exists()
    gitlab = (origin / ".gitlab-ci.yml").read_text()
    for command in (
        "reconciler validate",
        "reconciler check-ownership",
        "reconciler plan --output markdown",
        "reconciler apply --yes",
    ):
        assert command in gitlab
        assert command in (origin / WORKFLOW).read_text()
    env = {
        "RECONCILER_DB": f"sqlite:///{tmp_path / 'shared-state.db'}",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }

    # main is applied by the workflow's apply job
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "--quiet", str(origin), str(checkout))
    applied = run_step(
        checkout, steps(checkout, "apply")["apply"], {**env, "RECONCILER_USER": "carol"}
    )
    assert applied.returncode == 0, applied.stderr

    # alice (team sales) edits the saved query of sales.daily_rollup and a sales snapshot
    git(origin, "checkout", "--quiet", "-b", "alice/rollup")
    (origin / "queries/sales/rollup.sql").write_text("select 42 as answer;\n")
    snapshot = origin / "jobs/sales/orders_snapshot.sql"
    snapshot.write_text(snapshot.read_text() + "-- reviewed\n")
    git(origin, "commit", "--quiet", "-am", "Tune the rollup")
    git(origin, "checkout", "--quiet", "main")
    git(checkout, "fetch", "--quiet", "origin")
    git(checkout, "checkout", "--quiet", "-b", "alice/rollup", "origin/alice/rollup")
    results = pr_checks(checkout, env, "alice")
    assert [r.returncode for r in results] == [0, 0, 0], results[-1].stderr + results[-1].stdout
    comment = (checkout / "plan.md").read_text()
    assert comment.startswith("### reconciler plan for")
    assert "<details><summary><code>~ sales.orders_snapshot</code> (update)</summary>" in comment
    assert "`queries/sales/rollup.sql` changed: affects 1 job: `sales.daily_rollup`" in comment
    assert json.loads((checkout / "plan.json").read_text())["affects"][0]["jobs"] == [
        "sales.daily_rollup"
    ]
    assert "alice may make all 2 changed file(s)" in Path(env["GITHUB_STEP_SUMMARY"]).read_text()

    # merge, then the apply job on main
    git(origin, "merge", "--quiet", "--no-ff", "-m", "Merge alice/rollup", "alice/rollup")
    git(checkout, "fetch", "--quiet", "origin")
    git(checkout, "checkout", "--quiet", "-B", "main", "origin/main")
    merged = run_step(
        checkout, steps(checkout, "apply")["apply"], {**env, "RECONCILER_USER": "carol"}
    )
    assert merged.returncode == 0, merged.stderr
    assert "Applied" in merged.stdout

    # dave (finance) may not edit a sales job: the ownership step fails naming the file
    git(origin, "checkout", "--quiet", "-b", "dave/daily")
    daily = origin / "jobs/sales/daily_rollup.yaml"
    daily.write_text(daily.read_text().replace("timeoutSeconds: 900", "timeoutSeconds: 60"))
    git(origin, "commit", "--quiet", "-am", "Shorter timeout")
    git(origin, "checkout", "--quiet", "main")
    git(checkout, "fetch", "--quiet", "origin")
    git(checkout, "checkout", "--quiet", "-b", "dave/daily", "origin/dave/daily")
    rejected = pr_checks(checkout, env, "dave")
    assert [r.returncode for r in rejected] == [0, 1]
    assert "`jobs/sales/daily_rollup.yaml` | modified | job-owner" in rejected[1].stdout
