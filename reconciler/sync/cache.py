"""The local parse cache: what a load recorded per (path, blob), in `.reconciler/cache/`.

A cache only: any failure to read or write it is ignored and the files are parsed.
Its entries are content-addressed (path and blob SHA), so an entry is valid for any
commit holding that blob at that path; facts carry their own dependency blobs.
Edge: stdlib sqlite3 only.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.load.reuse import KnownFile

CACHE_FILE = Path(".reconciler") / "cache" / "parse-v1.sqlite"


class ParseCache:
    """Per-repo cache of parsed documents and job facts keyed by (path, blob)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._found: dict[str, tuple[str, Mapping[str, Any]]] = {}
        """What lookup returned and save wrote, by path: (blob, document)."""

    @classmethod
    def for_repo(cls, repo: Path) -> ParseCache:
        return cls(repo / CACHE_FILE)

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=5)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS parsed (path TEXT NOT NULL, blob TEXT NOT NULL,"
                    " document TEXT NOT NULL, PRIMARY KEY (path, blob))"
                )
                self._conn = conn
            except (OSError, sqlite3.Error):
                return None
        return self._conn

    def lookup(self, wanted: Mapping[str, str]) -> dict[str, KnownFile]:
        """Entries for (path, blob) pairs of `wanted`; missing ones are left out."""
        conn = self._connect()
        if conn is None or not wanted:
            return {}
        out: dict[str, KnownFile] = {}
        loads = json.loads
        try:
            # The cache keeps one blob per path, so it holds about one version of the repo:
            # reading it whole beats hundreds of `IN (...)` lists, and only the entries
            # wanted are decoded.
            for path, blob, document in conn.execute("SELECT path, blob, document FROM parsed"):
                if wanted.get(path) == blob:
                    out[path] = KnownFile(blob=blob, document=loads(document))
        except (sqlite3.Error, ValueError):
            return {}
        self._found = {p: (k.blob, k.document) for p, k in out.items()}
        return out

    def save(self, documents: Mapping[str, Mapping[str, Any]], blobs: Mapping[str, str]) -> None:
        """Record `documents` (path -> document) at their blobs; keep one blob per path.

        Entries equal to what `lookup` returned are not written again."""
        found = self._found
        changed = {p: d for p, d in documents.items() if found.get(p) != (blobs[p], d)}
        conn = self._connect()
        if conn is None or not changed:
            return
        rows = [(p, blobs[p], json.dumps(d, sort_keys=True)) for p, d in changed.items()]
        try:
            with conn:
                conn.executemany(
                    "DELETE FROM parsed WHERE path = ? AND blob != ?", [(p, b) for p, b, _ in rows]
                )
                conn.executemany("INSERT OR REPLACE INTO parsed VALUES (?, ?, ?)", rows)
        except sqlite3.Error:
            return
        self._found.update({p: (blobs[p], d) for p, d in changed.items()})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
