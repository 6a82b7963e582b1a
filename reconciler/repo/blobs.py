"""Reading blob contents by SHA through one long-lived ``git cat-file --batch`` process.

Invariants: a `BlobReader` runs at most one git process at a time, started on the first
read and kept until `close()` (counted in `processes_started`), however many blobs and
calls; a batch of any size cannot
deadlock, because requests are written by a separate thread while answers are read;
answers are read to the end of each batch even when some objects are missing, so
the process stays in step; a blob read once is kept and never asked for again.

Not thread-safe: one caller at a time. Does not know about paths, trees or refs;
`reconciler.repo.snapshot` maps paths to blobs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Self

from reconciler.errors import RepoError
from reconciler.ids import BlobSha
from reconciler.repo.git import GitProcess, start_git


class BlobReader:
    """Reads blobs of one repository by SHA; use as a context manager or `close()` it."""

    def __init__(self, repo: Path) -> None:
        self._repo = repo
        self._process: GitProcess | None = None
        self._cache: dict[BlobSha, bytes] = {}
        self.processes_started = 0

    @property
    def pid(self) -> int | None:
        """The pid of the running ``cat-file`` process, or None before the first read."""
        return None if self._process is None else self._process.popen.pid

    def read(self, shas: Iterable[BlobSha]) -> dict[BlobSha, bytes]:
        """Return the content of every blob in `shas` (each once, in first-seen order).

        Raises `RepoError` naming the SHAs that are missing or not blobs, or when git
        fails.
        """
        wanted = list(dict.fromkeys(shas))
        missing = [sha for sha in wanted if sha not in self._cache]
        if missing:
            self._fetch(missing)
        return {sha: self._cache[sha] for sha in wanted}

    def _ensure_process(self) -> GitProcess:
        if self._process is None:
            self._process = start_git(self._repo, "cat-file", "--batch", stdin=True)
            self.processes_started += 1
        return self._process

    def _fetch(self, shas: list[BlobSha]) -> None:
        process = self._ensure_process()
        request = "".join(f"{sha}\n" for sha in shas).encode("ascii")
        write_error: list[BaseException] = []

        def write() -> None:
            try:
                process.stdin.write(request)
                process.stdin.flush()
            except (OSError, ValueError) as exc:
                write_error.append(exc)

        writer = threading.Thread(target=write, name="git-cat-file-writer", daemon=True)
        writer.start()
        try:
            bad = self._read_answers(process, shas)
        except BaseException:
            self.close()  # unblocks the writer with a broken pipe
            writer.join()
            raise
        writer.join()
        if write_error:
            self.close()
            raise RepoError(f"{process.command}: cannot send requests: {write_error[0]}")
        if bad:
            raise RepoError(f"cannot read git objects: {', '.join(bad)}")

    def _read_answers(self, process: GitProcess, shas: list[BlobSha]) -> list[str]:
        bad: list[str] = []
        out = process.stdout
        for sha in shas:
            header = out.readline()
            if not header.endswith(b"\n"):
                raise process.failure("ended early")
            fields = header.decode("ascii", errors="replace").split()
            if len(fields) == 2 and fields[1] in ("missing", "ambiguous"):
                bad.append(f"{sha} ({fields[1]})")
                continue
            if len(fields) != 3 or not fields[2].isdigit():
                raise process.failure(f"unexpected answer {header!r}")
            size = int(fields[2])
            body = out.read(size + 1)
            if len(body) != size + 1:
                raise process.failure("ended early")
            if fields[1] != "blob":
                bad.append(f"{sha} (a {fields[1]}, not a blob)")
                continue
            self._cache[sha] = body[:size]
        return bad

    def close(self) -> None:
        """Stop the git process; a later `read` starts a new one."""
        if self._process is not None:
            process, self._process = self._process, None
            process.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
