"""reconciler.repo.identity with and without a configured git identity."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import RepoError
from reconciler.repo.identity import commit_all, commit_identity_env


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def no_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where git has no identity configured anywhere."""
    home = tmp_path / "home"
    home.mkdir()
    empty = home / "empty-gitconfig"
    empty.write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "reconciler.yaml").write_text("{}\n")
    return root


@pytest.mark.usefixtures("git_identity")
def test_a_configured_identity_needs_no_environment(repo: Path) -> None:
    assert commit_identity_env(repo) == {}


@pytest.mark.usefixtures("git_identity")
def test_commit_all_commits_every_change_but_reconciler_state_and_returns_the_sha(
    repo: Path,
) -> None:
    (repo / "jobs").mkdir()
    (repo / "jobs" / "a.yaml").write_text("a: 1\n")
    (repo / ".reconciler").mkdir()
    (repo / ".reconciler" / "state.db").write_text("local state\n")
    sha = commit_all(repo, "Restore a\n\nRestores: a@abc123\n")
    assert sha == git(repo, "rev-parse", "HEAD")
    assert git(repo, "ls-tree", "-r", "--name-only", "HEAD").split() == [
        "jobs/a.yaml",
        "reconciler.yaml",
    ]
    assert (
        git(repo, "log", "-1", "--format=%an <%ae>|%B")
        == "Test User <test@example.com>|Restore a\n\nRestores: a@abc123"
    )
    with pytest.raises(RepoError, match="git commit"):
        commit_all(repo, "nothing changed")


@pytest.mark.usefixtures("no_identity")
def test_without_an_identity_commits_are_by_user_at_localhost(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "ann")
    assert commit_identity_env(repo) == {
        "GIT_AUTHOR_NAME": "ann",
        "GIT_COMMITTER_NAME": "ann",
        "GIT_AUTHOR_EMAIL": "ann@localhost",
        "GIT_COMMITTER_EMAIL": "ann@localhost",
    }
    commit_all(repo, "init")
    assert (
        git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>")
        == "ann <ann@localhost>|ann <ann@localhost>"
    )


@pytest.mark.usefixtures("no_identity")
def test_without_user_the_fallback_name_is_reconciler(repo: Path) -> None:
    assert commit_identity_env(repo, environ={})["GIT_AUTHOR_EMAIL"] == "reconciler@localhost"


@pytest.mark.usefixtures("no_identity")
def test_only_the_missing_part_of_an_identity_is_filled_in(repo: Path) -> None:
    git(repo, "config", "user.name", "Repo Name")
    assert commit_identity_env(repo, environ={"USER": "ann"}) == {
        "GIT_AUTHOR_EMAIL": "ann@localhost",
        "GIT_COMMITTER_EMAIL": "ann@localhost",
    }
