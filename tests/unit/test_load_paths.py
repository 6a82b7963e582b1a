"""Repo paths named in files resolve relative to the naming file and never escape."""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.load.paths import resolve_repo_path


@dataclass(frozen=True)
class Entry:
    blob: str = "0" * 40
    is_symlink: bool = False


FILES = {
    "jobs/a/etl.yaml": Entry(),
    "jobs/a/etl.sql": Entry(),
    "jobs/shared.sql": Entry(),
    "jobs/a/alias.sql": Entry(is_symlink=True),
    "jobs/a/out": Entry(is_symlink=True),
    "lib": Entry(is_symlink=True),
    "real/x.py": Entry(),
}
TARGETS = {"jobs/a/alias.sql": "../shared.sql", "jobs/a/out": "../../..", "lib": "real"}


def resolve(ref: str) -> tuple[str | None, str | None]:
    r = resolve_repo_path("jobs/a/etl.yaml", ref, FILES, TARGETS.__getitem__)
    return r.path, r.rule if r.problem else None


def test_relative_path_resolves_next_to_the_naming_file() -> None:
    assert resolve("etl.sql") == ("jobs/a/etl.sql", None)
    assert resolve("../shared.sql") == ("jobs/shared.sql", None)


def test_symlink_inside_the_repo_is_followed() -> None:
    assert resolve("alias.sql") == ("jobs/shared.sql", None)
    assert resolve("../../lib/x.py") == ("real/x.py", None)


def test_escapes_are_refused() -> None:
    assert resolve("/etc/passwd") == (None, "path-escape")
    assert resolve("../../../x.sql") == (None, "path-escape")
    assert resolve("out/etc/passwd") == (None, "path-escape")


def test_missing_file_is_reported_as_missing() -> None:
    assert resolve("nope.sql") == (None, "missing-file")
