"""Reading one YAML document safely and fast, and finding where a field is written.

Invariants: only the safe loader (no tag builds an object); a duplicate key is an
error; parsing uses PyYAML's C loader when present. Positions cost time, so
`locate` composes a file's node tree only when a diagnostic needs it.
Pure: takes bytes, returns values; never reads files itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.errors import SourceLocation
from reconciler.load.diagnostic import Diagnostic, Severity

_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class _Duplicate:
    key: str
    line: int
    column: int
    first_line: int


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """The safe loader, recording duplicate keys instead of silently keeping the last."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.duplicates: list[_Duplicate] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key is reported by the constructor
            if first is None:
                seen[key] = key_node.start_mark.line + 1
                continue
            self.duplicates.append(
                _Duplicate(
                    key=str(key),
                    line=key_node.start_mark.line + 1,
                    column=key_node.start_mark.column + 1,
                    first_line=first,
                )
            )
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


@dataclass(slots=True)
class ParsedYaml:
    value: Any
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity.is_error for d in self.diagnostics)


def parse_yaml(path: str, data: bytes) -> ParsedYaml:
    """Parse one YAML document; syntax errors, tags and duplicate keys become diagnostics."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParsedYaml(
            None,
            [_error(path, 1, 1, "", f"file is not UTF-8 text (byte {exc.start})", "encoding")],
        )
    loader = _Loader(text.encode("utf-8"))
    try:
        value = loader.get_single_data()
    except yaml.constructor.ConstructorError as exc:
        return ParsedYaml(None, [_marked(path, exc, "yaml-tag", _tag_message(exc))])
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or "invalid YAML"
        context = f" {exc.context}" if exc.context else ""
        return ParsedYaml(
            None, [_marked(path, exc, "yaml-syntax", f"YAML syntax error: {problem}{context}")]
        )
    except yaml.YAMLError as exc:
        return ParsedYaml(None, [_error(path, 1, 1, "", f"YAML error: {exc}", "yaml-syntax")])
    finally:
        loader.dispose()
    index = NodeIndex(data) if loader.duplicates else None
    diagnostics = [
        _error(
            path,
            d.line,
            d.column,
            index.field_at(d.line, d.column) if index else d.key,
            f"duplicate key {d.key!r} (first defined on line {d.first_line}); "
            "each key may appear once in a mapping",
            "duplicate-key",
        )
        for d in loader.duplicates
    ]
    return ParsedYaml(value, diagnostics)


def _tag_message(exc: yaml.constructor.ConstructorError) -> str:
    problem = exc.problem or ""
    tag = problem.split("tag ", 1)[-1].split(" ", 1)[0].strip("'") if "tag" in problem else ""
    tag = tag.replace("tag:yaml.org,2002:", "!!")
    shown = f" {tag}" if tag else ""
    return (
        f"YAML tag{shown} is not allowed: files are read with the safe loader "
        "(plain mappings, lists, strings, numbers, booleans and null only)"
    )


def _marked(path: str, exc: yaml.MarkedYAMLError, rule: str, message: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else 1
    column = mark.column + 1 if mark is not None else 1
    return _error(path, line, column, "", message, rule)


def _error(path: str, line: int, column: int, fld: str, message: str, rule: str) -> Diagnostic:
    return Diagnostic(
        severity=Severity.ERROR,
        location=SourceLocation(path=path, line=line, column=column),
        field=fld,
        message=message,
        rule=rule,
    )


class NodeIndex:
    """Positions of the keys and values of one YAML document, composed on first use."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._root: yaml.Node | None = None
        self._composed = False

    def _node(self) -> yaml.Node | None:
        if not self._composed:
            self._composed = True
            try:
                self._root = yaml.compose(self._data, Loader=_BaseLoader)
            except yaml.YAMLError:
                self._root = None
        return self._root

    def locate(self, loc: Loc, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, column) of the value at `loc` (of its key with `key=True`).

        A path that does not exist resolves to its deepest existing ancestor, so a
        missing field points at the mapping that should hold it.
        """
        node = self._node()
        if node is None:
            return (1, 1)
        mark = node.start_mark
        for i, part in enumerate(loc):
            last = i == len(loc) - 1
            if isinstance(node, yaml.MappingNode):
                found = None
                for key_node, value_node in node.value:
                    if str(key_node.value) == str(part):
                        found = (key_node, value_node)
                if found is None:
                    break
                if last and key:
                    mark = found[0].start_mark
                    break
                node = found[1]
                mark = node.start_mark
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    break
                node = node.value[part]
                mark = node.start_mark
            else:
                break
        return (mark.line + 1, mark.column + 1)

    def field_at(self, line: int, column: int) -> str:
        """The dotted field path of the key written at (line, column), 1-based."""
        from reconciler.load.diagnostic import render_field

        def walk(node: yaml.Node | None, loc: Loc) -> Loc | None:
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    here = (*loc, str(k.value))
                    if (k.start_mark.line + 1, k.start_mark.column + 1) == (line, column):
                        return here
                    found = walk(v, here)
                    if found is not None:
                        return found
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    found = walk(item, (*loc, i))
                    if found is not None:
                        return found
            return None

        return render_field(walk(self._node(), ()) or ())

    def mapping_keys(self, loc: Loc) -> list[tuple[str, int, int]]:
        """The keys of the mapping at `loc`, in file order, with their positions."""
        node = self._node()
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if str(k.value) == str(part)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            else:
                node = None
        if not isinstance(node, yaml.MappingNode):
            return []
        return [
            (str(k.value), k.start_mark.line + 1, k.start_mark.column + 1) for k, _ in node.value
        ]
