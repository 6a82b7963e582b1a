"""A diagnostic: one problem found in the jobs repo, with where and what would be valid.

Pure: no I/O. Diagnostics sort by path, line, column, field, message, so output
is byte-stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from reconciler.errors import SourceLocation


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"

    @property
    def is_error(self) -> bool:
        return self is Severity.ERROR


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One problem: `location` and `field` say where, `message` what and what would be valid."""

    severity: Severity
    location: SourceLocation
    field: str
    message: str
    rule: str

    def sort_key(self) -> tuple[str, int, int, str, str]:
        loc = self.location
        return (loc.path, loc.line, loc.column, self.field, self.message)

    def render(self) -> str:
        """`path:line:col: [warning: ]field: message`."""
        prefix = "warning: " if self.severity is Severity.WARNING else ""
        where = f"{self.field}: " if self.field else ""
        return f"{self.location.render()}: {prefix}{where}{self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "path": self.location.path,
            "line": self.location.line,
            "column": self.location.column,
            "field": self.field,
            "message": self.message,
            "rule": self.rule,
        }


def sort_diagnostics(items: list[Diagnostic]) -> list[Diagnostic]:
    """Distinct diagnostics in their total order."""
    return sorted(set(items), key=Diagnostic.sort_key)


def render_field(loc: tuple[str | int, ...]) -> str:
    """`('schedules', 0, 'cron')` -> `schedules[0].cron`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
