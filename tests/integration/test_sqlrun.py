"""The SQL child program, run as a real process on real DuckDB catalogs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from reconciler.targets.local.sqlrun import PREVIEW_BYTES, check_catalog, split_statements


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str
    result: dict[str, Any] | None


def run_sql(
    run_dir: Path,
    sql: str,
    *,
    arguments: dict[str, str] | None = None,
    catalog: Path | None = None,
    bookmark_in: Path | None = None,
    bookmark_out: Path | None = None,
) -> Outcome:
    run_dir.mkdir(parents=True, exist_ok=True)
    request = {
        "sql": sql,
        "catalogPath": str(catalog or run_dir.parent / "catalogs" / "main.duckdb"),
        "arguments": arguments or {},
        "bookmark": {
            "in": None if bookmark_in is None else str(bookmark_in),
            "out": None if bookmark_out is None else str(bookmark_out),
        },
    }
    (run_dir / "sql.json").write_text(json.dumps(request))
    done = subprocess.run(
        [sys.executable, "-m", "reconciler.targets.local.sqlrun", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    return Outcome(done.returncode, done.stdout, done.stderr, result)


def test_each_statement_is_bound_with_only_the_parameters_it_uses(tmp_path: Path) -> None:
    outcome = run_sql(
        tmp_path / "run",
        "CREATE TABLE days (day VARCHAR);\n"
        "INSERT INTO days VALUES ($day);\n"
        "SELECT day, $day = day AS same FROM days",
        arguments={"day": "2026-03-29", "unused": "x"},
    )
    assert outcome.code == 0, outcome.stderr
    assert outcome.result == {
        "statements": 3,
        "statementType": "SELECT",
        "rowCount": 1,
        "columns": ["day", "same"],
        "preview": [["2026-03-29", True]],
        "truncated": False,
    }
    assert "3 statement(s) ran" in outcome.stdout
    assert "2026-03-29\ttrue" in outcome.stdout


def test_create_then_select_previews_rows_and_counts_all_of_them(tmp_path: Path) -> None:
    outcome = run_sql(
        tmp_path / "run",
        "CREATE TABLE t AS SELECT range AS n, DATE '2026-01-01' + range::INT AS d "
        "FROM range(25);\nSELECT n, d FROM t ORDER BY n;",
    )
    assert outcome.code == 0, outcome.stderr
    result = outcome.result
    assert result is not None
    assert result["rowCount"] == 25
    assert result["columns"] == ["n", "d"]
    assert len(result["preview"]) == 20
    assert result["preview"][1] == [1, "2026-01-02"]  # dates by str()
    assert result["truncated"] is True
    assert "5 more row(s) not shown" in outcome.stdout


def test_changed_rows_are_reported_as_the_row_count(tmp_path: Path) -> None:
    outcome = run_sql(
        tmp_path / "run", "CREATE TABLE t (n INT); INSERT INTO t SELECT * FROM range(7)"
    )
    assert outcome.code == 0, outcome.stderr
    assert outcome.result is not None
    assert outcome.result["rowCount"] == 7
    assert outcome.result["statementType"] == "INSERT"
    assert outcome.result["columns"] == []
    assert "affected 7 row(s)" in outcome.stdout


def test_preview_keeps_under_64_kib_by_dropping_rows(tmp_path: Path) -> None:
    outcome = run_sql(tmp_path / "run", "SELECT range AS n, repeat('x', 10000) AS s FROM range(12)")
    assert outcome.code == 0, outcome.stderr
    result = outcome.result
    assert result is not None
    assert result["rowCount"] == 12
    assert 0 < len(result["preview"]) < 12
    assert len(json.dumps(result["preview"]).encode()) <= PREVIEW_BYTES
    assert result["truncated"] is True


def test_a_quoted_dollar_name_is_text_not_a_parameter(tmp_path: Path) -> None:
    outcome = run_sql(
        tmp_path / "run",
        'SELECT \'$day\' AS literal, "$x" FROM (SELECT 1 AS "$x") -- $missing\n',
        arguments={},
    )
    assert outcome.code == 0, outcome.stderr
    assert outcome.result is not None
    assert outcome.result["preview"] == [["$day", 1]]


def test_a_parameter_no_argument_provides_fails_before_anything_runs(tmp_path: Path) -> None:
    catalog = tmp_path / "c.duckdb"
    outcome = run_sql(
        tmp_path / "run",
        "CREATE TABLE t (n INT); SELECT $day",
        catalog=catalog,
    )
    assert outcome.code == 1
    assert "statement 2 uses $day" in outcome.stderr
    assert not catalog.exists()


def test_a_sql_error_names_the_statement_and_exits_1(tmp_path: Path) -> None:
    outcome = run_sql(tmp_path / "run", "SELECT 1;\nSELECT 2;\nSELECT * FROM no_such_table;")
    assert outcome.code == 1
    assert outcome.stderr.startswith("statement 3 of 3 failed: Catalog Error")
    assert "no_such_table" in outcome.stderr
    assert outcome.result is None


def test_a_parse_error_names_the_statement(tmp_path: Path) -> None:
    outcome = run_sql(tmp_path / "run", "SELECT ';' AS a;\nSELEC 2;\nSELECT 3")
    assert outcome.code == 1
    assert outcome.stderr.startswith("statement 2 could not be parsed:")


@pytest.fixture
def locked_catalog(tmp_path: Path) -> Iterator[Path]:
    """A catalog file another process holds open for writing until the test ends."""
    catalog = tmp_path / "locked.duckdb"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True);"
            " sys.stdin.read()",
            str(catalog),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        try:
            assert holder.stdout.readline().strip() == "ready"
            yield catalog
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)


def test_a_catalog_locked_by_another_process_exits_2(locked_catalog: Path) -> None:
    outcome = run_sql(locked_catalog.parent / "run", "SELECT 1", catalog=locked_catalog)
    assert outcome.code == 2
    assert f"catalog {locked_catalog} is in use by another process" in outcome.stderr


def test_bookmark_round_trips_between_runs(tmp_path: Path) -> None:
    catalog = tmp_path / "c.duckdb"
    bookmark = tmp_path / "state" / "bookmark.json"
    setup = run_sql(
        tmp_path / "setup",
        "CREATE TABLE events AS SELECT range AS id FROM range(1, 6)",
        catalog=catalog,
    )
    assert setup.code == 0, setup.stderr
    sql = (
        "CREATE TABLE IF NOT EXISTS seen (id BIGINT);\n"
        "INSERT INTO seen SELECT id FROM events\n"
        "  WHERE $bookmark IS NULL OR id > CAST($bookmark AS BIGINT);\n"
        "SELECT count(*) AS seen, max(id) AS bookmark FROM seen"
    )
    first = run_sql(
        tmp_path / "r1", sql, catalog=catalog, bookmark_in=bookmark, bookmark_out=bookmark
    )
    assert first.code == 0, first.stderr
    assert json.loads(bookmark.read_text()) == 5
    with duckdb.connect(str(catalog)) as connection:
        connection.execute("INSERT INTO events VALUES (6), (7)")
    second = run_sql(
        tmp_path / "r2", sql, catalog=catalog, bookmark_in=bookmark, bookmark_out=bookmark
    )
    assert second.code == 0, second.stderr
    assert second.result is not None
    assert second.result["preview"] == [[7, 7]]  # 6 and 7 added once, nothing twice
    assert json.loads(bookmark.read_text()) == 7


def test_a_null_bookmark_keeps_the_previous_one(tmp_path: Path) -> None:
    bookmark = tmp_path / "bookmark.json"
    bookmark.write_text('"2026-01-01"')
    outcome = run_sql(
        tmp_path / "run",
        "SELECT $bookmark AS was, NULL AS bookmark",
        bookmark_in=bookmark,
        bookmark_out=bookmark,
    )
    assert outcome.code == 0, outcome.stderr
    assert outcome.result is not None
    assert outcome.result["preview"] == [["2026-01-01", None]]
    assert json.loads(bookmark.read_text()) == "2026-01-01"


def test_check_catalog_accepts_a_new_path_and_a_duckdb_file(tmp_path: Path) -> None:
    assert check_catalog(tmp_path / "new" / "dir" / "c.duckdb") is None
    existing = tmp_path / "real.duckdb"
    duckdb.connect(str(existing)).close()
    assert check_catalog(existing) is None


def test_check_catalog_refuses_what_duckdb_could_not_open(tmp_path: Path) -> None:
    not_duckdb = tmp_path / "notes.duckdb"
    not_duckdb.write_text("hello, this is not a database at all")
    empty = tmp_path / "empty.duckdb"
    empty.touch()
    a_file = tmp_path / "file"
    a_file.touch()
    assert "is not a DuckDB database" in (check_catalog(not_duckdb) or "")
    assert "is empty" in (check_catalog(empty) or "")
    assert "is a directory" in (check_catalog(tmp_path) or "")
    assert "is not a directory" in (check_catalog(a_file / "c.duckdb") or "")
    assert "not absolute" in (check_catalog(Path("relative.duckdb")) or "")


def test_a_run_on_a_non_duckdb_file_fails_without_touching_it(tmp_path: Path) -> None:
    catalog = tmp_path / "notes.duckdb"
    catalog.write_text("precious notes")
    outcome = run_sql(tmp_path / "run", "CREATE TABLE t (n INT)", catalog=catalog)
    assert outcome.code == 1
    assert "is not a DuckDB database" in outcome.stderr
    assert catalog.read_text() == "precious notes"


def test_split_statements_respects_quotes_comments_and_dollar_strings() -> None:
    sql = "SELECT 'a;b'; -- c;d\nSELECT $$e;f$$, $day; /* g; */ SELECT \"h;\"; ;"
    assert split_statements(sql) == [
        "SELECT 'a;b';",
        " -- c;d\nSELECT $$e;f$$, $day;",
        ' /* g; */ SELECT "h;";',
    ]


def test_the_child_imports_only_the_standard_library_and_duckdb() -> None:
    code = (
        "import sys\n"
        "from reconciler.targets.local import sqlrun\n"
        "heavy = {'pydantic', 'yaml', 'sqlalchemy', 'click', 'duckdb'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy"
        " or (m.startswith('reconciler') and not m.startswith('reconciler.targets'))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['reconciler']"  # duckdb too is loaded only to run SQL
