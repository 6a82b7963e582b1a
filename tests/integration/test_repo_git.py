"""reconciler.repo.git against real git repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import RepoError
from reconciler.repo.git import find_repo_root, resolve_commit, run_git

pytestmark = pytest.mark.usefixtures("git_identity")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "jobs").mkdir()
    (root / "jobs" / "a.yaml").write_text("command: {cmd: echo}\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_run_git_returns_stdout_as_text(repo: Path) -> None:
    assert run_git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main\n"


def test_run_git_failure_names_the_command_and_git_stderr(repo: Path) -> None:
    with pytest.raises(RepoError, match=r"git cat-file -t nosuchobject failed .*Not a valid"):
        run_git(repo, "cat-file", "-t", "nosuchobject")


def test_run_git_passes_input_and_extra_environment(repo: Path) -> None:
    sha = run_git(repo, "hash-object", "--stdin", input=b"hello\n").strip()
    assert sha == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert run_git(repo, "var", "GIT_AUTHOR_IDENT", env={"GIT_AUTHOR_NAME": "Zed"}).startswith(
        "Zed <"
    )


def test_repo_root_is_found_from_a_subdirectory_and_from_a_file(repo: Path) -> None:
    assert find_repo_root(repo / "jobs") == repo.resolve()
    assert find_repo_root(repo / "jobs" / "a.yaml") == repo.resolve()


def test_outside_a_repository_the_error_says_to_use_repo(tmp_path: Path) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    with pytest.raises(RepoError) as caught:
        find_repo_root(outside)
    assert str(caught.value) == f"not inside a git repository: {outside} (use --repo PATH)"


def test_branches_tags_and_short_shas_resolve_to_the_full_commit_sha(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "v1", "-m", "annotated")
    assert resolve_commit(repo, "main") == head
    assert resolve_commit(repo, "v1") == head  # peeled to the commit
    assert resolve_commit(repo, head[:8]) == head


@pytest.mark.parametrize("ref", ["foo", "--output=/tmp/x", "", "main:jobs"])
def test_an_unknown_ref_is_named_in_the_error(repo: Path, ref: str) -> None:
    with pytest.raises(RepoError) as caught:
        resolve_commit(repo, ref)
    assert str(caught.value) == f"unknown ref {ref!r}: not a branch, tag or commit"


def test_git_dir_inherited_from_a_surrounding_git_does_not_redirect_commands(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "trunk")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    assert run_git(repo, "symbolic-ref", "--short", "HEAD") == "main\n"
