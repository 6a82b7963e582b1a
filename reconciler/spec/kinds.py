"""The file kinds of a jobs repo, which model reads each, and their JSON Schemas.

Pure: no I/O (writing schema files is the CLI's job).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from reconciler.spec.base import SpecModel
from reconciler.spec.job import JobSpec
from reconciler.spec.profile import ProfileSpec
from reconciler.spec.schedule import ReusableScheduleSpec
from reconciler.spec.settings import RepoSettings
from reconciler.spec.teams import TeamsSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class FileKind:
    name: str
    model: type[SpecModel]
    title: str
    where: str


KINDS: dict[str, FileKind] = {
    k.name: k
    for k in (
        FileKind(name="job", model=JobSpec, title="reconciler job", where="jobs/**/<name>.yaml"),
        FileKind(
            name="reconciler",
            model=RepoSettings,
            title="reconciler repo settings",
            where="reconciler.yaml",
        ),
        FileKind(name="teams", model=TeamsSpec, title="reconciler teams", where="teams.yaml"),
        FileKind(
            name="profile",
            model=ProfileSpec,
            title="reconciler compute profile",
            where="profiles/<name>.yaml",
        ),
        FileKind(
            name="schedule",
            model=ReusableScheduleSpec,
            title="reconciler reusable schedule",
            where="schedules/<id>.yaml",
        ),
    )
}


def render_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one file kind. Raises KeyError for an unknown kind."""
    spec = KINDS[kind]
    schema = spec.model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{kind}.json",
        "title": spec.title,
        "description": f"{spec.where} in a reconciler jobs repo",
        **{k: v for k, v in schema.items() if k not in ("title",)},
    }


def render_schema_text(kind: str) -> str:
    """The schema as the committed file holds it: sorted keys, 2-space indent, final newline."""
    return json.dumps(render_schema(kind), indent=2, sort_keys=True) + "\n"
