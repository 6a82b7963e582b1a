"""Commit history of the jobs repo: commit metadata, and which commit last changed a file.

Invariants: history is always the first-parent history of the commit given (DESIGN.md
"Versions"); a merge commit changes what differs from its first parent; renames are
not detected (a move is a delete plus an add), except in `log_paths(follow=True)`;
paths are literal repo-relative POSIX paths (no globs), and a directory path stands for
every file under it, as in ``git log -- <dir>``. `last_changes` costs one git process
for any number of paths. Times are aware UTC datetimes.

Does not decide what a version is (which paths make up a job): callers pass the paths.
Never writes to the repo.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from reconciler.ids import CommitSha
from reconciler.repo.git import check_ref, resolve_commit, run_git, start_git

# One field per placeholder, each ended by NUL; git ends each record with a newline.
_FIELDS = (
    "%H",
    "%an",
    "%ae",
    "%at",
    "%cn",
    "%ct",
    "%s",
    "%B",
    "%(trailers:only,unfold,separator=%x1f,key_value_separator=%x1e)",
)
_FORMAT = "--format=" + "".join(f"{field}%x00" for field in _FIELDS)
_LOG_OPTIONS = ("--no-show-signature", "--no-color", "--first-parent")
_LITERAL_PATHS = {"GIT_LITERAL_PATHSPECS": "1"}
_COMMIT_MARK = "\x01"
_READ_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitInfo:
    """Metadata of one commit."""

    sha: CommitSha
    author_name: str
    author_email: str
    authored_at: datetime
    committer_name: str
    committed_at: datetime
    subject: str
    message: str
    """The full message, subject and body, without trailing newlines."""
    trailers: dict[str, str]
    """Trailers of the message (``Restores: sales.daily@abc123``); a repeated key keeps
    its last value."""


def _parse_trailers(text: str) -> dict[str, str]:
    trailers: dict[str, str] = {}
    for item in text.strip("\n").split("\x1f"):
        key, sep, value = item.partition("\x1e")
        if sep and key.strip():
            trailers[key.strip()] = value.strip()
    return trailers


def _utc(epoch: str) -> datetime:
    return datetime.fromtimestamp(int(epoch), tz=UTC)


def _parse_commits(out: str) -> list[CommitInfo]:
    fields = out.split("\0")
    commits: list[CommitInfo] = []
    width = len(_FIELDS)
    for start in range(0, len(fields) - width + 1, width):
        sha, an, ae, at, cn, ct, subject, message, trailers = fields[start : start + width]
        commits.append(
            CommitInfo(
                sha=CommitSha(sha.lstrip("\n")),
                author_name=an,
                author_email=ae,
                authored_at=_utc(at),
                committer_name=cn,
                committed_at=_utc(ct),
                subject=subject,
                message=message.rstrip("\n"),
                trailers=_parse_trailers(trailers),
            )
        )
    return commits


def read_commit(repo: Path, ref: str) -> CommitInfo:
    """Return the metadata of the commit `ref` names.

    Raises `RepoError` ("unknown ref ...") when it names no commit.
    """
    sha = resolve_commit(repo, ref)
    out = run_git(repo, "log", "-1", "--no-show-signature", "--no-color", _FORMAT, sha, "--")
    return _parse_commits(out)[0]


def log_paths(
    repo: Path, commit: str, paths: Collection[str], *, follow: bool = False
) -> list[CommitInfo]:
    """Return the commits on the first-parent history of `commit` that changed any of
    `paths`, newest first; [] when `paths` is empty.

    `follow=True` follows renames (``git log --follow``) and takes exactly one path.
    Raises `RepoError` when `commit` names no commit, `ValueError` for `follow=True`
    with other than one path.
    """
    if follow and len(paths) != 1:
        raise ValueError(f"log_paths(follow=True) takes exactly one path, got {len(paths)}")
    if not paths:
        return []
    options = [*_LOG_OPTIONS, _FORMAT, *(("--follow",) if follow else ("--no-renames",))]
    out = run_git(
        repo, "log", *options, check_ref(commit), "--", *sorted(paths), env=_LITERAL_PATHS
    )
    return _parse_commits(out)


def _tokens(chunks: Iterator[bytes]) -> Iterator[str]:
    """Split a stream of NUL-terminated fields into text fields."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\0")
        for field in complete:
            yield field.decode("utf-8", errors="surrogateescape")
    if pending:
        yield pending.decode("utf-8", errors="surrogateescape")


def _with_ancestors(path: str) -> Iterator[str]:
    """Yield `path`, then each directory above it: a/b/c -> a/b/c, a/b, a."""
    yield path
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def last_changes(repo: Path, commit: str, paths: Collection[str]) -> dict[str, CommitSha]:
    """Return, for each of `paths`, the newest commit on the first-parent history of
    `commit` that changed it (added, modified or deleted it) — what
    ``git log --first-parent -1 -- <path>`` answers. Paths never present are absent.

    One git process walks the history, and stops as soon as every path is found.
    Raises `RepoError` when `commit` names no commit or git fails.
    """
    wanted: dict[str, list[str]] = {}
    for path in paths:
        wanted.setdefault(path.rstrip("/"), []).append(path)
    found: dict[str, CommitSha] = {}
    if not wanted:
        return found
    process = start_git(
        repo,
        "log",
        *_LOG_OPTIONS,
        "--diff-merges=first-parent",
        "--root",
        "--no-renames",
        "--name-only",
        "-z",
        f"--format={_COMMIT_MARK}%H",
        check_ref(commit),
        "--",
    )
    try:
        chunks = iter(lambda: process.stdout.read(_READ_CHUNK), b"")
        current: CommitSha | None = None
        after_header = False
        for token in _tokens(chunks):
            if token.startswith(_COMMIT_MARK) and len(token) in (41, 65):  # SHA-1, SHA-256
                current, after_header = CommitSha(token[1:]), True
                continue
            changed = token[1:] if after_header and token.startswith("\n") else token
            after_header = False
            if current is None or not changed:
                continue
            for candidate in _with_ancestors(changed):
                for original in wanted.pop(candidate, ()):
                    found[original] = current
            if not wanted:
                return found  # the rest of history is not needed
        if process.wait() != 0:
            raise process.failure("failed")
        return found
    finally:
        process.close()
