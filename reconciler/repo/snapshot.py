"""The files of one version of the jobs repo: a commit's tree, or the working tree.

Invariants: `files()` lists every regular file and symlink of that version, keyed and
sorted by repo-relative POSIX path; a symlink is never followed (mode ``120000``, its
content is the link target); a `FileEntry.blob` is the git blob SHA-1 of exactly the
bytes `read` returns. A commit snapshot is read without checking anything out: one
``git ls-tree`` for the listing and one ``git cat-file --batch`` process for every
content read, however many files. The worktree snapshot is read once, when opened,
and never changes after (later edits on disk are not seen). Nothing under
``.reconciler/`` is ever part of a worktree snapshot.

Does not parse file contents (that is `reconciler.load`) and never writes to the repo.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Protocol, Self

from reconciler.errors import RepoError
from reconciler.ids import BlobSha, CommitSha
from reconciler.repo.blobs import BlobReader
from reconciler.repo.git import resolve_commit, run_git

MODE_FILE = "100644"
MODE_EXECUTABLE = "100755"
MODE_SYMLINK = "120000"

STATE_DIR = ".reconciler"
"""Local state and caches in the jobs repo: never part of a snapshot."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEntry:
    """One file of a snapshot."""

    path: str
    """Repo-relative POSIX path."""
    blob: BlobSha
    """Git blob SHA-1 of the content."""
    mode: str
    """``100644``, ``100755`` or ``120000`` (a symlink; its content is the link target)."""

    @property
    def is_symlink(self) -> bool:
        return self.mode == MODE_SYMLINK


def hash_blob(data: bytes) -> BlobSha:
    """Return the git blob SHA-1 of `data`, as ``git hash-object`` computes it (no filters)."""
    digest = hashlib.sha1(b"blob %d\0" % len(data), usedforsecurity=False)
    digest.update(data)
    return BlobSha(digest.hexdigest())


class Snapshot(Protocol):
    """The files of one version of the repo.

    `files()` returns every file, sorted by path, and is cheap to call again.
    `read(paths)` returns the content of each path (in the order given, each once) and
    raises `RepoError` naming the paths that are not in `files()` or cannot be read;
    it never raises `KeyError`. `close()` releases any process; a snapshot is also a
    context manager that closes on exit. Not thread-safe.
    """

    label: str
    """How to name this version to a person: ``main (1a2b3c4)``, ``worktree``."""
    commit: CommitSha | None
    """The commit read, or None for the working tree."""

    def files(self) -> Mapping[str, FileEntry]: ...

    def read(self, paths: Iterable[str]) -> dict[str, bytes]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _unknown_paths(label: str, unknown: list[str]) -> RepoError:
    shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
    return RepoError(f"{label}: no such file: {shown}")


class _Closing:
    def close(self) -> None:
        """Release resources; the default holds none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CommitSnapshot(_Closing):
    """The tree of one commit; contents come from `blobs`, one process for all reads."""

    def __init__(
        self,
        *,
        label: str,
        commit: CommitSha,
        entries: Mapping[str, FileEntry],
        blobs: BlobReader,
    ) -> None:
        self.label = label
        self.commit: CommitSha | None = commit
        self._entries = MappingProxyType(dict(sorted(entries.items())))
        self.blobs = blobs

    def files(self) -> Mapping[str, FileEntry]:
        return self._entries

    def read(self, paths: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(paths))
        unknown = [path for path in wanted if path not in self._entries]
        if unknown:
            raise _unknown_paths(self.label, unknown)
        contents = self.blobs.read(self._entries[path].blob for path in wanted)
        return {path: contents[self._entries[path].blob] for path in wanted}

    def close(self) -> None:
        self.blobs.close()


def _label(ref: str, sha: CommitSha) -> str:
    if len(ref) >= 4 and sha.startswith(ref.lower()):
        return sha[:12]
    return f"{ref} ({sha[:7]})"


def _parse_ls_tree(out: str) -> dict[str, FileEntry]:
    entries: dict[str, FileEntry] = {}
    for record in out.split("\0"):
        if not record:
            continue
        meta, _, path = record.partition("\t")
        mode, kind, sha = meta.split(" ")
        if kind != "blob":  # "commit": a submodule, whose files are not in this repo
            continue
        entries[path] = FileEntry(path=path, blob=BlobSha(sha), mode=mode)
    return entries


def open_commit(repo: Path, ref: str) -> CommitSnapshot:
    """Return the snapshot of the commit `ref` names, without checking it out.

    Submodules are left out. Raises `RepoError` when `ref` names no commit or git fails.
    Close the snapshot (or use it as a context manager) to stop its git process.
    """
    sha = resolve_commit(repo, ref)
    out = run_git(repo, "ls-tree", "-r", "-z", "--full-tree", sha)
    return CommitSnapshot(
        label=_label(ref, sha),
        commit=sha,
        entries=_parse_ls_tree(out),
        blobs=BlobReader(repo),
    )


class WorktreeSnapshot(_Closing):
    """The working tree as it was when opened: contents are held in memory."""

    def __init__(self, *, entries: Mapping[str, FileEntry], contents: Mapping[str, bytes]) -> None:
        self.label = "worktree"
        self.commit: CommitSha | None = None
        self._entries = MappingProxyType(dict(sorted(entries.items())))
        self._contents = dict(contents)

    def files(self) -> Mapping[str, FileEntry]:
        return self._entries

    def read(self, paths: Iterable[str]) -> dict[str, bytes]:
        wanted = list(dict.fromkeys(paths))
        unknown = [path for path in wanted if path not in self._entries]
        if unknown:
            raise _unknown_paths(self.label, unknown)
        return {path: self._contents[path] for path in wanted}


def _is_state_path(path: str) -> bool:
    return path == STATE_DIR or path.startswith(STATE_DIR + "/")


def _read_worktree_file(root: Path, path: str) -> tuple[str, bytes] | None:
    """Return (mode, content) of one file on disk, or None when it is gone or no file."""
    full = root / path
    try:
        info = full.lstat()
        if stat.S_ISLNK(info.st_mode):
            return MODE_SYMLINK, os.readlink(os.fsencode(full))
        if not stat.S_ISREG(info.st_mode):
            return None  # a directory (submodule, nested repo), fifo or socket
        data = full.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None  # deleted (or replaced) since git listed it
    except OSError as exc:
        raise RepoError(f"worktree: cannot read {path}: {exc}") from exc
    mode = MODE_EXECUTABLE if info.st_mode & stat.S_IXUSR else MODE_FILE
    return mode, data


def open_worktree(repo: Path) -> WorktreeSnapshot:
    """Return the snapshot of the working tree whose top directory is `repo`: tracked and
    untracked files that git does not ignore, except ``.reconciler/``; tracked files
    deleted from disk are left out.

    Raises `RepoError` when git fails or a listed file cannot be read.
    """
    out = run_git(
        repo,
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
        "--",
        ".",
        f":(exclude){STATE_DIR}",
    )
    entries: dict[str, FileEntry] = {}
    contents: dict[str, bytes] = {}
    for path in dict.fromkeys(out.split("\0")):  # a conflicted path is listed per stage
        if not path or path.endswith("/") or _is_state_path(path):
            continue
        found = _read_worktree_file(repo, path)
        if found is None:
            continue
        mode, data = found
        entries[path] = FileEntry(path=path, blob=hash_blob(data), mode=mode)
        contents[path] = data
    return WorktreeSnapshot(entries=entries, contents=contents)
