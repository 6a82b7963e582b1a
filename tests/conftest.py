"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def git_identity(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give git a fixed identity and nothing else from this machine's configuration:
    a global config file holding only user.name/user.email, no system config."""
    config = tmp_path_factory.mktemp("git-identity") / "gitconfig"
    config.write_text("[user]\n\tname = Test User\n\temail = test@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)


FIXED_GIT_DATE = "2026-01-15T12:00:00+00:00"


def commit_tree(repo: Path, message: str = "commit") -> str:
    """Stage everything in `repo` and commit it with a fixed identity and date, so the
    SHA depends only on the content and history."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test User",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test User",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "GIT_AUTHOR_DATE": FIXED_GIT_DATE,
        "GIT_COMMITTER_DATE": FIXED_GIT_DATE,
    }
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(
        ["git", "-C", str(repo), "commit", "--quiet", "--allow-empty", "-m", message],
        check=True,
        env=env,
    )
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, env=env, capture_output=True
    )
    return out.stdout.decode().strip()


def make_jobs_repo(
    root: Path, files: dict[str, str], symlinks: dict[str, str] | None = None
) -> Path:
    """A git repo on branch main holding `files` (path -> text) and `symlinks`
    (path -> target), committed once."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--quiet", "--initial-branch", "main", str(root)], check=True)
    (root / ".gitignore").write_text(".reconciler/\n")
    for path, text in files.items():
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text, encoding="utf-8")
    for path, target in (symlinks or {}).items():
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.symlink_to(target)
    commit_tree(root, "initial")
    return root


@pytest.fixture
def jobs_repo_factory(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(1_000_000))

    def factory(files: dict[str, str], symlinks: dict[str, str] | None = None) -> Path:
        return make_jobs_repo(tmp_path / f"repo{next(counter)}", files, symlinks)

    return factory
