"""Turning a pydantic ValidationError into diagnostics that say what would be valid.

Pure: no I/O. Walks the model classes along an error's `loc` to name the valid
fields of the mapping in question ("did you mean ...?").
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Discriminator, ValidationError
from pydantic_core import ErrorDetails

from reconciler.load.diagnostic import render_field

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FieldProblem:
    """One validation problem before it is given a position in the file."""

    loc: Loc
    anchor: str  # "value" | "key" | "parent" | "second-key"
    message: str
    rule: str
    keys: tuple[str, ...] = ()


_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a mapping",
    type(None): "null",
}


def _yaml_type(value: Any) -> str:
    for py_type, name in _TYPE_NAMES.items():
        if type(value) is py_type:
            return name
    return type(value).__name__


def _walk(annotation: Any, loc: Loc) -> tuple[Any, Loc]:
    """Follow `loc` through model annotations; return the annotation reached and the
    loc with pydantic's union tags removed."""
    clean: list[str | int] = []
    current = annotation
    for part in loc:
        current = _unwrap(current)
        if _is_tagged_union(current):
            tags = _tags(current)
            if isinstance(part, str) and part in tags:
                current = tags[part]
                continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            clean.append(part)
            field_name = _field_for_alias(current, str(part))
            current = current.model_fields[field_name].annotation if field_name else None
        elif typing.get_origin(current) is list:
            clean.append(part)
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            clean.append(part)
            current = typing.get_args(current)[1]
        else:
            clean.append(part)
            current = None
    return _unwrap(current), tuple(clean)


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            if any(isinstance(m, Discriminator) for m in annotation.__metadata__):
                return annotation
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
                continue
        return annotation


def _is_tagged_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) is typing.Annotated and any(
        isinstance(m, Discriminator) for m in annotation.__metadata__
    )


def _tags(annotation: Any) -> dict[str, Any]:
    union = typing.get_args(annotation)[0]
    out: dict[str, Any] = {}
    for member in typing.get_args(union):
        if typing.get_origin(member) is typing.Annotated:
            inner, *meta = typing.get_args(member)
            for m in meta:
                tag = getattr(m, "tag", None)
                if isinstance(tag, str):
                    out[tag] = inner
    return out


def _field_for_alias(model: type[BaseModel], alias: str) -> str | None:
    for name, info in model.model_fields.items():
        if (info.alias or name) == alias:
            return name
    return None


def valid_keys(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the mapping at `loc` (inside `model`) may have."""
    target, _ = _walk(model, loc)
    if isinstance(target, type) and issubclass(target, BaseModel):
        return [info.alias or name for name, info in target.model_fields.items()]
    if _is_tagged_union(target):
        keys: list[str] = []
        for member in _tags(target).values():
            if isinstance(member, type) and issubclass(member, BaseModel):
                keys += [info.alias or name for name, info in member.model_fields.items()]
        return keys
    return []


def suggest(word: str, choices: list[str]) -> str:
    """`did you mean 'x'?` or `valid: a, b, c`."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "valid: " + ", ".join(sorted(choices)) if choices else "none are defined"


def problems_from_validation(model: type[BaseModel], exc: ValidationError) -> list[FieldProblem]:
    """One FieldProblem per pydantic error, with a message that says what would be valid."""
    out: list[FieldProblem] = []
    for err in exc.errors(include_url=False):
        out.append(_problem(model, err))
    return out


def _problem(model: type[BaseModel], err: ErrorDetails) -> FieldProblem:
    kind = err["type"]
    _, loc = _walk(model, tuple(err["loc"]))
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        parent = loc[:-1]
        word = str(loc[-1])
        choices = valid_keys(model, tuple(err["loc"])[:-1])
        where = f" in {render_field(parent)}" if parent else ""
        return FieldProblem(
            loc=loc,
            anchor="key",
            message=f"unknown field {word!r}{where}; "
            + (suggest(word, choices) if choices else "no fields are allowed here"),
            rule="unknown-field",
        )
    if kind == "missing":
        return FieldProblem(
            loc=loc,
            anchor="parent",
            message=f"missing required field {str(loc[-1])!r}",
            rule="missing-field",
        )
    if kind == "exactly_one":
        keys = tuple(ctx.get("keys", ()))
        return FieldProblem(
            loc=loc,
            anchor="second-key" if len(keys) > 1 else "parent-self",
            message=err["msg"],
            rule="exactly-one",
            keys=keys,
        )
    if kind in ("cron", "timezone", "schedule_id", "origin_without_file"):
        rule = {"cron": "cron", "timezone": "timezone", "schedule_id": "invalid-id"}.get(
            kind, "origin"
        )
        return FieldProblem(loc=loc, anchor="value", message=err["msg"], rule=rule)
    if kind == "secret_ref":
        return FieldProblem(loc=loc, anchor="value", message=err["msg"], rule="wrong-type")
    value = err.get("input")
    message = err["msg"]
    if kind.endswith("_type") or kind.endswith("_parsing") or kind == "model_type":
        message = f"{message}, got {_yaml_type(value)}"
        if isinstance(value, str | int | float | bool):
            message += f" {value!r}"
        rule = "wrong-type"
    elif kind == "enum" or kind == "literal_error":
        message = f"{message}, got {value!r}"
        rule = "invalid-value"
    else:
        if not isinstance(value, dict | list) and value is not None:
            message = f"{message}, got {value!r}"
        rule = "invalid-value"
    return FieldProblem(loc=loc, anchor="value", message=message, rule=rule)
