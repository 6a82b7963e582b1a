"""reconciler.repo.branches against real git repositories and clones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import RepoError
from reconciler.ids import CommitSha
from reconciler.repo.branches import (
    BranchRef,
    MainBranch,
    is_ancestor,
    is_on_main,
    list_branches,
    resolve_main,
)

pytestmark = pytest.mark.usefixtures("git_identity")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def rev(repo: Path, ref: str) -> CommitSha:
    return CommitSha(git(repo, "rev-parse", ref))


def commit(repo: Path, path: str, text: str, message: str | None = None) -> CommitSha:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message or f"write {path}")
    return rev(repo, "HEAD")


def new_repo(tmp_path: Path, branch: str, name: str = "repo") -> Path:
    root = tmp_path / name
    root.mkdir()
    git(root, "init", "-q", "-b", branch)
    commit(root, "jobs/a.yaml", "a: 1\n")
    return root


def test_a_local_main_branch_is_main(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, "main")
    git(repo, "branch", "master")
    assert resolve_main(repo) == MainBranch(name="main", tip_ref="main", tip=rev(repo, "main"))


def test_master_is_main_when_there_is_no_main(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, "master")
    git(repo, "checkout", "-q", "-b", "feature")
    tip = commit(repo, "jobs/b.yaml", "b: 1\n")
    main = resolve_main(repo)
    assert (main.name, main.tip_ref) == ("master", "master")
    assert main.tip != tip


def test_without_main_or_master_there_is_no_main_branch(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, "trunk")
    with pytest.raises(
        RepoError, match=r"no main branch: .*no branch 'main' and no branch 'master'"
    ):
        resolve_main(repo)


def test_a_clone_follows_origin_head_and_reads_the_tip_from_origin(tmp_path: Path) -> None:
    upstream = new_repo(tmp_path, "trunk", "upstream")
    git(upstream, "branch", "main")  # a decoy: origin/HEAD points at trunk
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    upstream_tip = commit(upstream, "jobs/b.yaml", "b: 1\n")
    git(clone, "fetch", "-q", "origin")
    local_tip = commit(clone, "jobs/c.yaml", "unpushed\n")  # local trunk is ahead of origin

    main = resolve_main(clone)
    assert main == MainBranch(name="trunk", tip_ref="origin/trunk", tip=upstream_tip)
    assert main.tip != local_tip


def test_with_an_origin_the_tip_of_main_is_origin_main_not_the_local_branch(tmp_path: Path) -> None:
    upstream = new_repo(tmp_path, "main", "upstream")
    repo = new_repo(tmp_path, "main")
    git(repo, "remote", "add", "origin", str(upstream))
    git(repo, "fetch", "-q", "origin")  # no origin/HEAD is set by fetch
    local_tip = commit(repo, "jobs/local.yaml", "unpushed\n")
    main = resolve_main(repo)
    assert main == MainBranch(name="main", tip_ref="origin/main", tip=rev(upstream, "main"))
    assert main.tip != local_tip


def test_main_branch_in_reconciler_yaml_overrides_the_fallback(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, "main")
    git(repo, "checkout", "-q", "-b", "production")
    production_tip = commit(repo, "jobs/p.yaml", "p: 1\n")
    git(repo, "checkout", "-q", "main")
    commit(repo, "reconciler.yaml", "# settings\nmainBranch: production\n")
    assert resolve_main(repo) == MainBranch(
        name="production", tip_ref="production", tip=production_tip
    )


def test_main_branch_is_read_from_the_fallback_tip_not_from_head(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, "main")
    main_tip = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "-b", "draft")
    commit(repo, "reconciler.yaml", "mainBranch: draft\n")
    assert resolve_main(repo) == MainBranch(name="main", tip_ref="main", tip=main_tip)


@pytest.mark.parametrize(
    "settings", ["mainBranch: [unclosed\n", "- a list\n", "mainBranch: 3\n", "teams: {}\n", ""]
)
def test_a_reconciler_yaml_without_a_usable_main_branch_is_ignored(
    tmp_path: Path, settings: str
) -> None:
    repo = new_repo(tmp_path, "main")
    tip = commit(repo, "reconciler.yaml", settings)
    assert resolve_main(repo) == MainBranch(name="main", tip_ref="main", tip=tip)


def test_a_main_branch_setting_naming_a_missing_branch_is_an_error(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, "main")
    commit(repo, "reconciler.yaml", "mainBranch: release\n")
    with pytest.raises(RepoError, match="mainBranch: 'release', but release does not exist"):
        resolve_main(repo)


def test_branches_are_listed_local_then_remote_without_origin_head(tmp_path: Path) -> None:
    upstream = new_repo(tmp_path, "main", "upstream")
    git(upstream, "branch", "feature")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(upstream), str(clone))
    git(clone, "branch", "draft")
    sha = rev(clone, "HEAD")
    assert list_branches(clone) == [
        BranchRef(name="draft", is_remote=False, sha=sha),
        BranchRef(name="main", is_remote=False, sha=sha),
        BranchRef(name="origin/feature", is_remote=True, sha=sha),
        BranchRef(name="origin/main", is_remote=True, sha=sha),
    ]


def test_only_commits_on_the_first_parent_line_of_main_are_on_main(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, "main")
    first = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    feature_commit = commit(repo, "jobs/f.yaml", "f: 1\n")
    git(repo, "checkout", "-q", "main")
    second = commit(repo, "jobs/b.yaml", "b: 1\n")
    git(repo, "merge", "-q", "--no-ff", "feature", "-m", "merge feature")
    merge = rev(repo, "HEAD")
    git(repo, "checkout", "-q", "-b", "draft")
    draft = commit(repo, "jobs/d.yaml", "d: 1\n")
    main = resolve_main(repo)

    for sha in (first, second, merge, "main"):
        assert is_on_main(repo, sha, main)
    for sha in (feature_commit, draft):
        assert not is_on_main(repo, sha, main)
    assert is_ancestor(repo, feature_commit, "main")
    assert is_ancestor(repo, "main", "main")
    assert not is_ancestor(repo, draft, "main")
    with pytest.raises(RepoError, match="unknown ref 'nope'"):
        is_on_main(repo, "nope", main)
