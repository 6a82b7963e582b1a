"""reconciler.repo.snapshot against real git repositories."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.errors import RepoError
from reconciler.repo.snapshot import Snapshot, hash_blob, open_commit, open_worktree

pytestmark = pytest.mark.usefixtures("git_identity")

IDENTITY = ("-c", "user.name=Test User", "-c", "user.email=test@example.com")


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    return subprocess.run(
        ["git", *IDENTITY, "-C", str(repo), *args], check=True, capture_output=True, input=input
    ).stdout.decode()


def write(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def commit_files(repo: Path, files: dict[str, bytes], message: str) -> str:
    write(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    commit_files(root, {"reconciler.yaml": b"{}\n", "jobs/a.yaml": b"a: 1\n"}, "first")
    return root


def test_a_commit_snapshot_of_another_branch_matches_its_files_without_checking_it_out(
    repo: Path,
) -> None:
    git(repo, "checkout", "-q", "-b", "feature")
    feature_files = {
        "jobs/a.yaml": b"a: 2\n",
        "jobs/sales/daily.yaml": b"sql: {file: daily.sql}\n",
        "jobs/sales/daily.sql": "select 'é' as x;\n".encode(),
        "queries/top customers.sql": b"select 1\n",
    }
    sha = commit_files(repo, feature_files, "feature work")
    git(repo, "checkout", "-q", "main")

    with open_commit(repo, "feature") as snapshot:
        assert snapshot.commit == sha
        assert snapshot.label == f"feature ({sha[:7]})"
        files = snapshot.files()
        assert list(files) == sorted([*feature_files, "reconciler.yaml"])
        assert snapshot.read(feature_files) == feature_files
        for path, data in feature_files.items():
            assert (
                files[path].blob
                == hash_blob(data)
                == git(repo, "rev-parse", f"feature:{path}").strip()
            )
            assert files[path].mode == "100644"
    assert (repo / "jobs" / "a.yaml").read_bytes() == b"a: 1\n"  # main is still checked out
    assert not (repo / "jobs" / "sales").exists()


def test_reading_an_unknown_path_raises_a_repo_error_naming_it(repo: Path) -> None:
    with (
        open_commit(repo, "main") as snapshot,
        pytest.raises(RepoError, match=r"no such file: nope\.yaml"),
    ):
        snapshot.read(["jobs/a.yaml", "nope.yaml"])
    with (
        open_worktree(repo) as worktree,
        pytest.raises(RepoError, match=r"no such file: nope\.yaml"),
    ):
        worktree.read(["nope.yaml"])


def test_an_unknown_ref_cannot_be_opened(repo: Path) -> None:
    with pytest.raises(RepoError, match="unknown ref 'nope': not a branch, tag or commit"):
        open_commit(repo, "nope")


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("big")
    git(root, "init", "-q", "-b", "main")
    files = {
        f"jobs/team{i % 50}/job{i}.yaml": f"command: {{cmd: echo {i}}}\n".encode()
        for i in range(5000)
    }
    files["big/blob.bin"] = os.urandom(3 * 1024 * 1024 + 17)
    files["jobs/copy-a.yaml"] = files["jobs/team0/job0.yaml"]  # a blob shared by two paths
    commit_files(root, files, "many files")
    return root, files


def test_reading_5000_files_and_a_large_blob_uses_one_cat_file_process(
    big_repo: tuple[Path, dict[str, bytes]],
) -> None:
    repo, files = big_repo
    with open_commit(repo, "main") as snapshot:
        assert len(snapshot.files()) == len(files)
        everything = snapshot.read(snapshot.files())
        pid = snapshot.blobs.pid
        again = snapshot.read(["jobs/team7/job7.yaml", "big/blob.bin"])
        assert snapshot.blobs.processes_started == 1
        assert snapshot.blobs.pid == pid is not None
    assert snapshot.blobs.pid is None  # closed on exit
    assert everything == files
    assert again["big/blob.bin"] == files["big/blob.bin"]
    assert len(everything["big/blob.bin"]) > 1024 * 1024


def test_symlinks_and_executables_keep_their_modes_in_commits_and_in_the_worktree(
    repo: Path,
) -> None:
    (repo / "jobs" / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (repo / "jobs" / "run.sh").chmod(0o755)
    (repo / "jobs" / "link.yaml").symlink_to("a.yaml")
    (repo / "dangling").symlink_to("no/such/target")
    commit_files(repo, {}, "modes")

    with open_commit(repo, "HEAD") as commit, open_worktree(repo) as worktree:
        snapshots: list[Snapshot] = [commit, worktree]  # both meet the protocol
        for snapshot in snapshots:
            files = snapshot.files()
            assert files["jobs/run.sh"].mode == "100755"
            assert files["jobs/link.yaml"].mode == "120000"
            assert files["jobs/link.yaml"].is_symlink
            assert not files["jobs/a.yaml"].is_symlink
            assert snapshot.read(["jobs/link.yaml", "dangling"]) == {
                "jobs/link.yaml": b"a.yaml",
                "dangling": b"no/such/target",
            }
        assert commit.files() == worktree.files()


def test_the_worktree_has_untracked_files_but_not_ignored_deleted_or_reconciler_state(
    repo: Path,
) -> None:
    commit_files(repo, {".gitignore": b"*.tmp\n", "jobs/gone.yaml": b"x: 1\n"}, "more")
    (repo / "jobs" / "gone.yaml").unlink()
    write(
        repo,
        {
            "jobs/new.yaml": b"new: true\n",
            "jobs/scratch.tmp": b"ignored\n",
            ".reconciler/state.db": b"not ignored, yet never part of a snapshot\n",
            "jobs/a.yaml": b"a: edited\n",
        },
    )

    with open_worktree(repo) as worktree:
        files = worktree.files()
        assert worktree.commit is None
        assert worktree.label == "worktree"
        assert list(files) == [".gitignore", "jobs/a.yaml", "jobs/new.yaml", "reconciler.yaml"]
        assert worktree.read(["jobs/a.yaml", "jobs/new.yaml"]) == {
            "jobs/a.yaml": b"a: edited\n",
            "jobs/new.yaml": b"new: true\n",
        }
        blob = git(repo, "hash-object", "jobs/a.yaml").strip()
        assert files["jobs/a.yaml"].blob == blob


def test_submodules_are_left_out_of_a_commit_snapshot(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{head},vendor/sub")
    git(repo, "commit", "-q", "-m", "gitlink")
    with open_commit(repo, "HEAD") as snapshot:
        assert "vendor/sub" not in snapshot.files()
        assert set(snapshot.files()) == {"reconciler.yaml", "jobs/a.yaml"}
