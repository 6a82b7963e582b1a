"""Rendering values for people and for JSON: times as ISO-8601 UTC with `Z`, tables.

Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo


def iso_z(value: datetime) -> str:
    """`2026-03-29T01:00:00Z` (seconds precision unless there are microseconds)."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def local_time(value: datetime, tz: str) -> str:
    local = value.astimezone(ZoneInfo(tz))
    return local.strftime("%Y-%m-%d %H:%M %Z")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table, two spaces between columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines) + "\n"
