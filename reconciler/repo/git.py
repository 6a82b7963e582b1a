"""Running the git command line: the one place reconciler starts git processes.

Invariants: every git process runs with ``LC_ALL=C`` (stable, parseable messages) and
``GIT_TERMINAL_PROMPT=0`` (it fails instead of asking for credentials), with stdin
closed unless input is given, and ``repo`` alone says which repository it reads
(``GIT_DIR``, ``GIT_WORK_TREE`` and the like inherited from a surrounding git, as in
a hook, are dropped). Every failure surfaces as `RepoError` naming the git
command and carrying git's stderr. Refs given by callers are checked not to look
like options before they reach a command line.

Does not parse git's output beyond stripping it, and does not use GitPython or
libgit2: other modules in `reconciler.repo` own the meaning of each command.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from reconciler.errors import RepoError
from reconciler.ids import CommitSha

GIT = "git"

_BASE_ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}

# Set by a surrounding git (inside a hook, say); they would override ``-C repo``.
_LOCATING_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_COMMON_DIR",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_PREFIX",
    }
)


def git_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment for a git process: ours without the variables that locate
    a repository, then the fixed settings, then `env`."""
    inherited = {k: v for k, v in os.environ.items() if k not in _LOCATING_VARS}
    return {**inherited, **_BASE_ENV, **(env or {})}


def _describe(args: tuple[str, ...]) -> str:
    return " ".join([GIT, *args])


def _decode(data: bytes) -> str:
    # Paths and messages are bytes to git; surrogateescape keeps odd bytes round-trippable.
    return data.decode("utf-8", errors="surrogateescape")


def _run(
    repo: Path,
    args: tuple[str, ...],
    input: bytes | None,
    env: Mapping[str, str] | None,
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [GIT, "-C", str(repo), *args],
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            env=git_env(env),
            check=False,
        )
    except OSError as exc:
        raise RepoError(f"{_describe(args)}: cannot run git: {exc}") from exc


def _failure(args: tuple[str, ...], proc: subprocess.CompletedProcess[bytes]) -> RepoError:
    stderr = _decode(proc.stderr).strip()
    return RepoError(f"{_describe(args)} failed (exit {proc.returncode}): {stderr}")


def run_git(
    repo: Path,
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``git -C repo ARGS`` and return its stdout as text (UTF-8, undecodable bytes
    kept as surrogates), unstripped.

    `env` entries override the inherited environment. Raises `RepoError` with the
    command and git's stderr when git cannot start or exits non-zero.
    """
    proc = _run(repo, args, input, env)
    if proc.returncode != 0:
        raise _failure(args, proc)
    return _decode(proc.stdout)


def query_git(
    repo: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Run a git command whose exit status 1 means "no" (``--verify --quiet``,
    ``--is-ancestor``, ``config --get``): return its stdout, or None on exit 1.

    Raises `RepoError` on any other failure.
    """
    proc = _run(repo, args, None, env)
    if proc.returncode == 1:
        return None
    if proc.returncode != 0:
        raise _failure(args, proc)
    return _decode(proc.stdout)


class GitProcess:
    """A running git process with binary pipes, started by `start_git`.

    stderr goes to a temporary file so it can never fill a pipe and block git.
    `close()` ends the process (if still running) and releases every descriptor.
    """

    def __init__(self, repo: Path, args: tuple[str, ...], *, stdin: bool) -> None:
        self.command = _describe(args)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        try:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                [GIT, "-C", str(repo), *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=git_env(),
            )
        except OSError as exc:
            self._stderr.close()
            raise RepoError(f"{self.command}: cannot run git: {exc}") from exc

    @property
    def stdin(self) -> IO[bytes]:
        assert self.popen.stdin is not None
        return self.popen.stdin

    @property
    def stdout(self) -> IO[bytes]:
        assert self.popen.stdout is not None
        return self.popen.stdout

    def failure(self, what: str) -> RepoError:
        """Return a `RepoError` for `what` went wrong, with git's exit status and stderr."""
        code = self.popen.poll()
        self._stderr.seek(0)
        stderr = _decode(self._stderr.read()).strip()
        status = "still running" if code is None else f"exit {code}"
        return RepoError(f"{self.command}: {what} ({status}): {stderr}")

    def wait(self) -> int:
        """Wait for git to exit on its own and return its exit status."""
        return self.popen.wait()

    def close(self) -> None:
        """End the process (terminating it if it still runs) and close its pipes."""
        # Terminate before closing: a thread blocked writing to stdin holds the pipe's
        # lock until the write fails, so closing first could wait forever.
        if self.popen.poll() is None:
            self.popen.terminate()
        self.popen.wait()
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        self._stderr.close()


def start_git(repo: Path, *args: str, stdin: bool = False) -> GitProcess:
    """Start ``git -C repo ARGS`` with stdout (and stdin when asked) as binary pipes.

    The caller owns the process and must `close()` it. Raises `RepoError` when git
    cannot start.
    """
    return GitProcess(repo, args, stdin=stdin)


def check_ref(ref: str) -> str:
    """Return `ref` unchanged, or raise `RepoError` when it is empty or looks like an
    option (a leading ``-`` would be read by git as a flag)."""
    if not ref or ref.startswith("-") or "\0" in ref:
        raise RepoError(f"unknown ref {ref!r}: not a branch, tag or commit")
    return ref


def find_repo_root(start: Path) -> Path:
    """Return the top directory of the git working tree enclosing `start` (a directory
    or a file).

    Raises `RepoError` ("not inside a git repository: <path> (use --repo PATH)") when
    `start` is not inside one or does not exist.
    """
    where = start.parent if start.is_file() else start
    message = f"not inside a git repository: {start} (use --repo PATH)"
    try:
        top = run_git(where, "rev-parse", "--show-toplevel").strip()
    except RepoError as exc:
        raise RepoError(message) from exc
    if not top:  # inside a .git directory or a bare repository
        raise RepoError(message)
    return Path(top)


def resolve_commit(repo: Path, ref: str) -> CommitSha:
    """Return the full SHA of the commit `ref` names (branch, tag, SHA or any revision
    expression such as ``HEAD~2``; annotated tags are peeled).

    Raises `RepoError` ("unknown ref 'foo': not a branch, tag or commit") when it names
    no commit.
    """
    out = query_git(repo, "rev-parse", "--verify", "--quiet", f"{check_ref(ref)}^{{commit}}")
    sha = (out or "").strip()
    if not sha:
        raise RepoError(f"unknown ref {ref!r}: not a branch, tag or commit")
    return CommitSha(sha)
