"""reconciler.gitops.versions and rollback against real git histories: inputs that change
over time, moves, deletions, and paths reused by another job."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import UsageError
from reconciler.gitops.rollback import plan_rollback
from reconciler.gitops.versions import FileState, load_former_ids, load_job_history
from reconciler.ids import BlobSha
from tests.conftest import commit_tree, make_jobs_repo

pytestmark = pytest.mark.usefixtures("git_identity")


def change(repo: Path, message: str, files: dict[str, str | None]) -> str:
    for path, text in files.items():
        full = repo / path
        if text is None:
            full.unlink()
        else:
            full.parent.mkdir(parents=True, exist_ok=True)
            full.write_text(text)
    return commit_tree(repo, message)


def test_a_file_the_job_stopped_naming_no_longer_makes_versions(tmp_path: Path) -> None:
    repo = make_jobs_repo(
        tmp_path / "r", {"jobs/a.yaml": "sql: {file: one.sql}\n", "jobs/one.sql": "SELECT 1;\n"}
    )
    first = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    switch = change(
        repo, "switch", {"jobs/a.yaml": "sql: {file: two.sql}\n", "jobs/two.sql": "SELECT 2;\n"}
    )
    change(repo, "edit the old file", {"jobs/one.sql": "SELECT 11;\n"})
    edit_new = change(repo, "edit the new file", {"jobs/two.sql": "SELECT 22;\n"})
    history = load_job_history(repo, "a", tip="main")
    assert [v.sha for v in history.versions] == [edit_new, switch, first]
    assert set(history.current) == {"jobs/a.yaml", "jobs/two.sql"}
    assert history.versions[-1].inputs.keys() == {"jobs/a.yaml", "jobs/one.sql"}


def test_a_deleted_job_keeps_its_versions_and_a_reused_old_path_is_not_followed(
    tmp_path: Path,
) -> None:
    repo = make_jobs_repo(tmp_path / "r", {"jobs/a.yaml": "command: {cmd: echo a}\n"})
    moved = change(
        repo, "move a to b", {"jobs/b.yaml": "command: {cmd: echo a}\n", "jobs/a.yaml": None}
    )
    change(repo, "a new job a", {"jobs/a.yaml": "command: {cmd: echo another}\n"})
    edit_b = change(repo, "edit b", {"jobs/b.yaml": "command: {cmd: echo b}\n"})
    history = load_job_history(repo, "b", tip="main")
    assert [v.sha for v in history.versions][:2] == [edit_b, moved]
    assert [v.job_id for v in history.versions] == ["b", "b", "a"]
    # Runs of `a` belong to the new job a now, so `runs b` does not take them.
    assert load_former_ids(repo, "b", tip="main") == []
    change(repo, "delete b", {"jobs/b.yaml": None})
    gone = load_job_history(repo, "b", tip="main")
    assert not gone.exists
    assert gone.versions[0].sha == edit_b
    with pytest.raises(UsageError, match="did you mean 'a'"):
        load_job_history(repo, "aa", tip="main")


def test_a_rollback_refuses_to_overwrite_a_file_the_job_no_longer_owns() -> None:
    a, b = (
        FileState(blob=BlobSha("a" * 40), mode="100644"),
        FileState(blob=BlobSha("b" * 40), mode="100644"),
    )
    plan = plan_rollback({"jobs/x.yaml": b}, {"jobs/x.yaml": a, "jobs/x.sql": a}, {})
    assert dict(plan.write) == {"jobs/x.sql": a, "jobs/x.yaml": a}
    assert plan.delete == ()
    with pytest.raises(UsageError, match=r"would overwrite jobs/x\.sql"):
        plan_rollback({"jobs/x.yaml": b}, {"jobs/x.yaml": a, "jobs/x.sql": a}, {"jobs/x.sql": b})
    with pytest.raises(UsageError, match="nothing to roll back"):
        plan_rollback({"jobs/x.yaml": a}, {"jobs/x.yaml": a}, {})
