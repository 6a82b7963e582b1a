"""The base of every file-format model: camelCase keys, unknown keys forbidden, frozen.

Pure: no I/O. Models describe what a file may say; cross-file rules live in
`reconciler.load`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel


class SpecModel(BaseModel):
    """A file-format model: keys are camelCase in YAML, snake_case in Python."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
        validate_default=False,
    )

    def to_document(self) -> dict[str, object]:
        """The model as it would be written in YAML: camelCase keys, unset defaults left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _scalar_to_str(value: object) -> object:
    """YAML reads `limit: 100` as an int and `day: 2026-01-01` as a date; a string field
    takes any such scalar as written."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return value


ScalarStr = Annotated[str, BeforeValidator(_scalar_to_str)]
"""A string that also accepts numbers, booleans and dates, as written in YAML."""
