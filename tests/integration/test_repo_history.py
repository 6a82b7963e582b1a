"""reconciler.repo.history against real git repositories with merges."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.errors import RepoError
from reconciler.repo.history import last_changes, log_paths, read_commit

pytestmark = pytest.mark.usefixtures("git_identity")


def git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env=None if env is None else {**os.environ, **env},
    ).stdout.strip()


def change(repo: Path, message: str, files: dict[str, str | None]) -> str:
    """Write (or, for None, delete) files and commit them; return the new SHA."""
    for path, text in files.items():
        target = repo / path
        if text is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def merge(repo: Path, branch: str, *extra: str) -> str:
    git(repo, "merge", "-q", "--no-ff", *extra, branch, "-m", f"Merge {branch}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main: add → (feature: edit a, add d, edit dir) → edit b → merge feature → delete c
    → (fix: edit a) → edit b → merge fix with -s ours → (quick: edit e) fast-forward →
    merge of main into a draft that main never gets."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    change(root, "add", {"a": "1", "b": "1", "c": "1", "dir/x": "1", "dir/sub/y": "1"})
    git(root, "checkout", "-q", "-b", "feature")
    change(root, "feature: edit a", {"a": "2"})
    change(root, "feature: add d, edit dir", {"d": "1", "dir/sub/y": "2"})
    git(root, "checkout", "-q", "main")
    change(root, "edit b", {"b": "2"})
    merge(root, "feature")
    change(root, "delete c", {"c": None})
    git(root, "checkout", "-q", "-b", "fix")
    change(root, "fix: edit a", {"a": "3"})
    git(root, "checkout", "-q", "main")
    change(root, "edit b again", {"b": "3"})
    merge(root, "fix", "-s", "ours")  # brings in nothing: changes no path
    git(root, "checkout", "-q", "-b", "quick")
    change(root, "quick: add e", {"e": "1"})
    git(root, "checkout", "-q", "main")
    git(root, "merge", "-q", "--ff-only", "quick")
    git(root, "checkout", "-q", "-b", "draft")
    change(root, "draft: edit a", {"a": "draft"})
    git(root, "checkout", "-q", "main")
    return root


PATHS = ["a", "b", "c", "d", "e", "dir", "dir/x", "dir/sub/y", "dir/sub", "never", "dir/never"]


def git_log_last_change(repo: Path, ref: str, path: str) -> str:
    return git(repo, "log", "--first-parent", "-1", "--format=%H", ref, "--", path)


@pytest.mark.parametrize("ref", ["main", "draft", "feature", "main~1", "main~3"])
def test_last_changes_agrees_with_git_log_first_parent_for_each_path(repo: Path, ref: str) -> None:
    expected = {path: sha for path in PATHS if (sha := git_log_last_change(repo, ref, path))}
    assert "never" not in expected
    assert len(set(expected.values())) >= 2
    assert last_changes(repo, ref, PATHS) == expected


def test_a_merge_commit_changes_what_it_brought_to_main(repo: Path) -> None:
    merge_commit = git(repo, "log", "--first-parent", "--format=%H", "--grep=Merge feature", "main")
    changes = last_changes(repo, "main", ["a", "d", "dir/sub/y", "b"])
    assert changes["d"] == changes["dir/sub/y"] == merge_commit
    assert changes["a"] == merge_commit  # the fix merged with -s ours did not change it
    assert changes["b"] == git(repo, "log", "-1", "--format=%H", "--grep=edit b again", "main")


def test_last_changes_of_no_paths_is_empty_and_an_unknown_commit_is_an_error(repo: Path) -> None:
    assert last_changes(repo, "main", []) == {}
    with pytest.raises(RepoError):
        last_changes(repo, "nope", ["a"])
    with pytest.raises(RepoError, match="unknown ref '--all'"):
        last_changes(repo, "--all", ["a"])


def test_last_changes_answers_thousands_of_paths_and_leaves_out_missing_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "many"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    first = change(root, "add", {f"jobs/j{i}.yaml": "1" for i in range(2000)})
    second = change(root, "edit half", {f"jobs/j{i}.yaml": "2" for i in range(0, 2000, 2)})
    paths = [f"jobs/j{i}.yaml" for i in range(2000)]
    changes = last_changes(root, "main", [*paths, "jobs/missing.yaml"])
    assert changes == {path: second if i % 2 == 0 else first for i, path in enumerate(paths)}


def test_log_paths_lists_first_parent_commits_touching_any_path_newest_first(repo: Path) -> None:
    subjects = [commit.subject for commit in log_paths(repo, "main", ["b", "c"])]
    assert subjects == ["edit b again", "delete c", "edit b", "add"]
    assert [c.subject for c in log_paths(repo, "main", ["a"])] == ["Merge feature", "add"]
    assert log_paths(repo, "main", []) == []


def test_log_paths_can_follow_a_renamed_file(repo: Path) -> None:
    git(repo, "mv", "dir/x", "dir/moved")
    git(repo, "commit", "-q", "-m", "move x")
    assert [c.subject for c in log_paths(repo, "main", ["dir/moved"])] == ["move x"]
    followed = [c.subject for c in log_paths(repo, "main", ["dir/moved"], follow=True)]
    assert followed == ["move x", "add"]
    with pytest.raises(ValueError, match="exactly one path"):
        log_paths(repo, "main", ["a", "b"], follow=True)


def test_read_commit_parses_authors_times_message_and_trailers(repo: Path) -> None:
    message = (
        "Restore sales.daily\n\nBecause the new SQL broke the report.\n\n"
        "Restores: sales.daily@abc123\nReviewed-by: Ann <ann@example.com>\n"
    )
    (repo / "a").write_text("restored")
    git(
        repo,
        "commit",
        "-q",
        "-a",
        "-m",
        message,
        env={
            "GIT_AUTHOR_NAME": "Bo Author",
            "GIT_AUTHOR_EMAIL": "bo@example.com",
            "GIT_AUTHOR_DATE": "2026-03-29T03:30:00+02:00",
            "GIT_COMMITTER_DATE": "2026-03-29T04:00:00+02:00",
        },
    )
    info = read_commit(repo, "HEAD")
    assert info.sha == git(repo, "rev-parse", "HEAD")
    assert (info.author_name, info.author_email) == ("Bo Author", "bo@example.com")
    assert info.committer_name == "Test User"
    assert info.authored_at == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert info.committed_at == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    assert info.authored_at.tzinfo is UTC
    assert info.subject == "Restore sales.daily"
    assert info.message == message.rstrip("\n")
    assert info.trailers == {
        "Restores": "sales.daily@abc123",
        "Reviewed-by": "Ann <ann@example.com>",
    }
    assert read_commit(repo, "main~1").trailers == {}
    with pytest.raises(RepoError, match="unknown ref 'nope'"):
        read_commit(repo, "nope")
