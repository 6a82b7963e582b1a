"""Every validation rule has a fixture repo under tests/testdata/invalid/<rule>/ whose
`reconciler validate` output must equal expected.txt (set UPDATE_GOLDEN=1 to rewrite)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.cli.main import cli
from tests.conftest import commit_tree

INVALID = Path(__file__).parent.parent / "testdata" / "invalid"
RULES = sorted(p.name for p in INVALID.iterdir() if p.is_dir())


def build_fixture(name: str, where: Path) -> Path:
    repo = where / name
    shutil.copytree(INVALID / name / "repo", repo)
    links = INVALID / name / "symlinks.txt"
    if links.exists():
        for line in links.read_text().splitlines():
            path, target = (part.strip() for part in line.split("->"))
            (repo / path).symlink_to(target)
    import subprocess

    subprocess.run(["git", "init", "--quiet", "--initial-branch", "main", str(repo)], check=True)
    commit_tree(repo, f"fixture {name}")
    return repo


@pytest.mark.parametrize("rule", RULES)
def test_validate_output_matches_golden_file(rule: str, tmp_path: Path) -> None:
    repo = build_fixture(rule, tmp_path)
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo)])
    golden = INVALID / rule / "expected.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(result.output)
    assert result.output == golden.read_text()
    expected_code = 0 if rule == "secrets-warnings" else 1
    assert result.exit_code == expected_code, result.output


def test_warnings_fail_validation_only_with_strict(tmp_path: Path) -> None:
    repo = build_fixture("secrets-warnings", tmp_path)
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo), "--strict"])
    assert result.exit_code == 1
    assert "warning: command.env.DB_PASSWORD" in result.output


def test_json_output_lists_errors_with_positions_and_rules(tmp_path: Path) -> None:
    repo = build_fixture("all-at-once", tmp_path)
    result = CliRunner().invoke(cli, ["validate", "--repo", str(repo), "--output", "json"])
    assert result.exit_code == 1
    body = json.loads(result.output)
    assert body["valid"] is False
    paths = [(e["path"], e["line"], e["column"]) for e in body["errors"]]
    assert paths == sorted(paths)
    assert {e["path"] for e in body["errors"]} == {
        "jobs/a.yaml",
        "jobs/b/c.yaml",
        "jobs/d.yaml",
        "reconciler.yaml",
    }
    first = body["errors"][0]
    assert set(first) == {"severity", "path", "line", "column", "field", "message", "rule"}


def test_every_rule_named_by_the_issue_has_a_fixture() -> None:
    wanted = {
        "yaml-syntax",
        "duplicate-key",
        "yaml-tag",
        "unknown-field",
        "wrong-type",
        "missing-field",
        "invalid-cron",
        "unknown-timezone",
        "cmd-and-args",
        "job-kind",
        "cron-never-fires",
        "missing-file",
        "missing-query",
        "missing-profile",
        "missing-schedule",
        "missing-catalog",
        "missing-team",
        "path-escape",
        "duplicate-schedule-id",
        "id-field",
        "invalid-id",
        "limits",
        "secrets-warnings",
    }
    assert wanted <= set(RULES)
