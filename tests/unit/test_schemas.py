"""The committed JSON Schemas are generated from the spec models and must be current."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from reconciler.spec.kinds import KINDS, render_schema_text

ROOT = Path(__file__).parent.parent.parent
SCHEMAS = ROOT / "schemas"
TEMPLATE = ROOT / "reconciler" / "template"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_committed_schema_is_current(kind: str) -> None:
    committed = SCHEMAS / f"{kind}.json"
    assert committed.exists(), f"missing {committed}: run `reconciler schema --write schemas`"
    assert committed.read_text() == render_schema_text(kind), (
        f"{committed} is stale: run `reconciler schema --write schemas`"
    )


def test_no_schema_file_without_a_kind() -> None:
    assert {p.stem for p in SCHEMAS.glob("*.json")} == set(KINDS)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("job", "jobs/sales/daily_rollup.yaml"),
        ("job", "jobs/ops/cleanup.yaml"),
        ("reconciler", "reconciler.yaml"),
        ("profile", "profiles/default.yaml"),
        ("schedule", "schedules/hourly.yaml"),
    ],
)
def test_template_files_satisfy_their_schema(kind: str, path: str) -> None:
    schema = json.loads(render_schema_text(kind))
    jsonschema.validate(yaml.safe_load((TEMPLATE / path).read_text()), schema)


def test_schema_rejects_unknown_fields_as_editors_would() -> None:
    schema = json.loads(render_schema_text("job"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"command": {"cmd": "x"}, "schedles": []}, schema)
