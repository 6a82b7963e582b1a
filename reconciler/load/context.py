"""Diagnostics of one file, positioned lazily: a file's node tree is composed only
when something in it is wrong.

Pure: holds bytes handed to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.errors import SourceLocation
from reconciler.load.diagnostic import Diagnostic, Severity, render_field
from reconciler.load.modelerrors import FieldProblem, Loc
from reconciler.load.yamldoc import NodeIndex


@dataclass
class FileContext:
    path: str
    data: bytes
    diagnostics: list[Diagnostic] = field(default_factory=list)
    _index: NodeIndex | None = None

    @property
    def index(self) -> NodeIndex:
        if self._index is None:
            self._index = NodeIndex(self.data)
        return self._index

    def report(
        self,
        loc: Loc,
        message: str,
        rule: str,
        *,
        anchor: str = "value",
        severity: Severity = Severity.ERROR,
        keys: tuple[str, ...] = (),
    ) -> None:
        line, column = self._position(loc, anchor, keys)
        self.diagnostics.append(
            Diagnostic(
                severity=severity,
                location=SourceLocation(path=self.path, line=line, column=column),
                field=render_field(loc),
                message=message,
                rule=rule,
            )
        )

    def error_count(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity is Severity.ERROR)

    def report_problem(self, problem: FieldProblem) -> None:
        self.report(
            problem.loc, problem.message, problem.rule, anchor=problem.anchor, keys=problem.keys
        )

    def warn(self, loc: Loc, message: str, rule: str, *, anchor: str = "value") -> None:
        self.report(loc, message, rule, anchor=anchor, severity=Severity.WARNING)

    def _position(self, loc: Loc, anchor: str, keys: tuple[str, ...]) -> tuple[int, int]:
        if anchor == "file":
            return (1, 1)
        if anchor == "key":
            return self.index.locate(loc, key=True)
        if anchor == "parent":
            if len(loc) <= 1:
                return (1, 1)
            return self.index.locate(loc[:-1])
        if anchor == "parent-self":
            if not loc:
                return (1, 1)
            return self.index.locate(loc, key=True)
        if anchor == "second-key":
            present = [k for k in self.index.mapping_keys(loc) if k[0] in keys]
            if len(present) >= 2:
                return (present[1][1], present[1][2])
            return self.index.locate(loc, key=True) if loc else (1, 1)
        return self.index.locate(loc)
