"""Repo paths named inside files: resolved relative to the naming file, never escaping.

Pure: works on the file listing of one version (path -> entry), follows symlinks
recorded in it, and never touches the disk.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


class RepoFile(Protocol):
    """What the loader needs to know of a file in one version of the repo."""

    @property
    def blob(self) -> str: ...

    @property
    def is_symlink(self) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedPath:
    path: str | None
    problem: str | None
    rule: str = "missing-file"


_MAX_LINKS = 40


def resolve_repo_path(
    base_file: str,
    ref: str,
    files: Mapping[str, RepoFile],
    link_target: Callable[[str], str],
) -> ResolvedPath:
    """Resolve `ref` (relative to the directory of `base_file`) to a regular file of the repo.

    Returns the repo path, or a problem: an absolute path, a `..` escape, a symlink
    pointing outside the repo, or a missing file.
    """
    if ref.startswith("/") or (len(ref) > 1 and ref[1] == ":"):
        return ResolvedPath(
            path=None,
            problem=f"{ref!r} is an absolute path; name a file inside the repo, "
            "relative to this file",
            rule="path-escape",
        )
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(base_file), ref))
    if joined == ".." or joined.startswith("../"):
        return ResolvedPath(
            path=None,
            problem=f"{ref!r} resolves outside the repo; name a file inside it",
            rule="path-escape",
        )
    return _follow_links(ref, joined, files, link_target)


def _follow_links(
    ref: str, path: str, files: Mapping[str, RepoFile], link_target: Callable[[str], str]
) -> ResolvedPath:
    for _ in range(_MAX_LINKS):
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            entry = files.get(prefix)
            if entry is None or not entry.is_symlink:
                continue
            target = link_target(prefix)
            if target.startswith("/"):
                return _escape(ref, prefix, target)
            rest = parts[i:]
            path = posixpath.normpath(posixpath.join(posixpath.dirname(prefix), target, *rest))
            if path == ".." or path.startswith("../"):
                return _escape(ref, prefix, target)
            break
        else:
            if path in files:
                return ResolvedPath(path=path, problem=None)
            return ResolvedPath(path=None, problem=f"file {path!r} does not exist in this commit")
    return ResolvedPath(
        path=None, problem=f"{ref!r}: too many levels of symbolic links", rule="path-escape"
    )


def _escape(ref: str, link: str, target: str) -> ResolvedPath:
    return ResolvedPath(
        path=None,
        problem=f"{ref!r} goes through symlink {link!r} -> {target!r}, which points outside "
        "the repo; name a file inside it",
        rule="path-escape",
    )
