"""The child program of a SQL run: executes one run directory's SQL on its DuckDB catalog.

Run as ``python -m reconciler.targets.local.sqlrun RUN_DIR``. It reads
``RUN_DIR/sql.json``::

    {"sql": "<text>", "catalogPath": "/abs/path.duckdb",
     "arguments": {"day": "today"}, "bookmark": {"in": "/abs/in.json" | null,
                                                 "out": "/abs/out.json" | null}}

opens the catalog read-write (creating its parent directory), splits the text into
statements with DuckDB's own parser, and executes them in order, each in its own
autocommit transaction unless the SQL says otherwise.

Arguments are bound as named parameters (``$day``), never spliced into the text; each
statement is bound with only the parameters DuckDB's parser finds in it, so ``'$day'``
inside a string literal or a comment is text, not a parameter. A statement that uses a
parameter no argument provides fails the run before any statement executes.

Bookmarks: when ``bookmark.in`` is set, the file it names holds the bookmark as JSON
(a missing file means no bookmark yet). It is bound as ``$bookmark`` in the statements
that use it, as text: a JSON string as itself, any other JSON value as its JSON text,
and null (no bookmark yet) as SQL NULL. When ``bookmark.out`` is set and the LAST
statement returns rows with a column named ``bookmark`` (any case), the value of that
column in the FIRST row is written to that file as JSON (values JSON cannot hold, such
as dates, as their ``str()``). No rows, no such column or a NULL value writes nothing,
so the previous bookmark stays. ``arguments`` may not name ``bookmark`` when
``bookmark.in`` is set. A typical incremental job ends with
``SELECT max(updated_at) AS bookmark FROM ...`` and filters with
``WHERE $bookmark IS NULL OR updated_at > CAST($bookmark AS TIMESTAMP)``.

On success it writes ``RUN_DIR/result.json``::

    {"statements": n, "statementType": "SELECT", "rowCount": rows, "columns": [...],
     "preview": [[...], ...], "truncated": false}

describing the last statement: a query's rows, or for INSERT/UPDATE/DELETE/COPY the
affected rows (then ``columns`` and ``preview`` are empty). ``preview`` holds at most
20 rows and at most 64 KiB of JSON; ``truncated`` is true when it holds fewer rows than
``rowCount``. A short summary and the preview go to stdout.

Exit codes: 0 success; 1 bad input or a SQL error (stderr names the statement number
and DuckDB's message); 2 the catalog is locked by another process (DuckDB allows one
writing process per file, readers included).

It imports only the standard library and, when running, duckdb — so the dispatcher can
import `check_catalog` cheaply and the child starts fast. It does not touch the store.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:
    import duckdb

PREVIEW_ROWS: Final = 20
PREVIEW_BYTES: Final = 64 * 1024
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_CATALOG_IN_USE: Final = 2

_DUCKDB_MAGIC: Final = b"DUCK"
_MAGIC_OFFSET: Final = 8  # the header starts with an 8-byte checksum
_FETCH_BATCH: Final = 10_000

JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"


class SqlRunFailed(Exception):
    """Ends the run with `exit_code`; the message goes to stderr."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlRequest:
    """What ``sql.json`` asks for."""

    sql: str
    catalog_path: Path
    arguments: Mapping[str, str]
    bookmark_in: Path | None
    bookmark_out: Path | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SqlResult:
    """What ``result.json`` reports about the last statement."""

    statements: int
    statement_type: str | None
    row_count: int
    columns: tuple[str, ...]
    preview: tuple[list[JsonValue], ...]
    truncated: bool
    bookmark: JsonValue

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "statements": self.statements,
            "statementType": self.statement_type,
            "rowCount": self.row_count,
            "columns": list(self.columns),
            "preview": list(self.preview),
            "truncated": self.truncated,
        }


def check_catalog(path: str | os.PathLike[str]) -> str | None:
    """Return why a run could not open `path` as a read-write DuckDB catalog, or None.

    Checks, without creating anything: the path is absolute; an existing path is a
    regular, readable, writable file starting with DuckDB's header; the nearest existing
    ancestor is a writable directory (DuckDB writes ``<path>.wal`` beside the file).
    It cannot see locks: a catalog in use by another process passes.
    """
    catalog = Path(path)
    if not catalog.is_absolute():
        return f"catalog path {catalog} is not absolute"
    try:
        if catalog.exists():
            problem = _check_existing_catalog(catalog)
            if problem is not None:
                return problem
        return _check_catalog_parent(catalog)
    except OSError as exc:
        return f"catalog {catalog} cannot be checked: {exc.strerror or exc}"


def _check_existing_catalog(catalog: Path) -> str | None:
    if catalog.is_dir():
        return f"catalog {catalog} is a directory"
    if not catalog.is_file():
        return f"catalog {catalog} is not a regular file"
    if not os.access(catalog, os.R_OK | os.W_OK):
        return f"catalog {catalog} is not readable and writable by this user"
    with catalog.open("rb") as handle:
        header = handle.read(_MAGIC_OFFSET + len(_DUCKDB_MAGIC))
    if header[_MAGIC_OFFSET:] != _DUCKDB_MAGIC:
        what = "is empty" if not header else "has no DuckDB header"
        return f"catalog {catalog} exists but is not a DuckDB database (the file {what})"
    return None


def _check_catalog_parent(catalog: Path) -> str | None:
    ancestor = catalog.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"catalog {catalog}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        if ancestor == catalog.parent:
            return f"catalog {catalog}: directory {ancestor} is not writable"
        return f"catalog {catalog}: cannot create its directory under {ancestor} (not writable)"
    return None


def load_request(run_dir: Path) -> SqlRequest:
    """Read and check ``run_dir/sql.json``; raises `SqlRunFailed` when it is unusable."""
    path = run_dir / "sql.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SqlRunFailed(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise SqlRunFailed(f"{path}: expected a JSON object")
    sql = raw.get("sql")
    catalog = raw.get("catalogPath")
    arguments = raw.get("arguments") or {}
    bookmark = raw.get("bookmark") or {}
    if not isinstance(sql, str):
        raise SqlRunFailed(f"{path}: 'sql' must be a string")
    if not isinstance(catalog, str) or not catalog:
        raise SqlRunFailed(f"{path}: 'catalogPath' must be a path")
    if not isinstance(arguments, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in arguments.items()
    ):
        raise SqlRunFailed(f"{path}: 'arguments' must map names to strings")
    if not isinstance(bookmark, dict):
        raise SqlRunFailed(f"{path}: 'bookmark' must be an object")
    bookmark_in, bookmark_out = (_optional_path(path, bookmark, key) for key in ("in", "out"))
    if bookmark_in is not None and "bookmark" in arguments:
        raise SqlRunFailed("the argument name 'bookmark' is reserved for the job's bookmark")
    return SqlRequest(
        sql=sql,
        catalog_path=Path(catalog),
        arguments=dict(arguments),
        bookmark_in=bookmark_in,
        bookmark_out=bookmark_out,
    )


def _optional_path(source: Path, bookmark: Mapping[str, Any], key: str) -> Path | None:
    value = bookmark.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SqlRunFailed(f"{source}: 'bookmark.{key}' must be a path or null")
    return Path(value)


def load_bookmark(path: Path) -> str | None:
    """The bookmark stored at `path` as the text bound to ``$bookmark`` (None: none yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SqlRunFailed(f"cannot read bookmark {path}: {exc}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SqlRunFailed(f"bookmark {path} is not JSON: {exc}") from exc
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def run_sql(request: SqlRequest) -> SqlResult:
    """Execute the request's statements on its catalog and describe the last one.

    Raises `SqlRunFailed` (exit 1) for SQL errors and (exit 2) for a locked catalog.
    """
    problem = check_catalog(request.catalog_path)
    if problem is not None:
        raise SqlRunFailed(problem)
    parameters: dict[str, str | None] = dict(request.arguments)
    if request.bookmark_in is not None:
        parameters["bookmark"] = load_bookmark(request.bookmark_in)
    statements = _parse(request.sql)
    _check_parameters(statements, parameters)
    try:
        request.catalog_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"catalog {request.catalog_path}: cannot create its directory: {exc}"
        raise SqlRunFailed(message) from exc
    connection = _connect(request.catalog_path)
    try:
        return _execute(connection, statements, parameters)
    finally:
        connection.close()


def _parse(sql: str) -> list[duckdb.Statement]:
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        number = _locate_parse_error(sql)
        where = f"statement {number}" if number is not None else "the SQL"
        raise SqlRunFailed(f"{where} could not be parsed: {exc}") from exc
    return statements


def _check_parameters(
    statements: Sequence[duckdb.Statement], parameters: Mapping[str, str | None]
) -> None:
    for number, statement in enumerate(statements, start=1):
        missing = sorted(set(statement.named_parameters) - parameters.keys())
        if missing:
            names = ", ".join(f"${name}" for name in missing)
            raise SqlRunFailed(
                f"statement {number} uses {names}, which no argument of the run provides"
            )


def _connect(catalog: Path) -> duckdb.DuckDBPyConnection:
    import duckdb

    try:
        connection = duckdb.connect(str(catalog))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise SqlRunFailed(
                f"catalog {catalog} is in use by another process", EXIT_CATALOG_IN_USE
            ) from exc
        raise SqlRunFailed(f"catalog {catalog} cannot be opened: {exc}") from exc
    except duckdb.Error as exc:
        raise SqlRunFailed(f"catalog {catalog} cannot be opened: {exc}") from exc
    return connection


def _execute(
    connection: duckdb.DuckDBPyConnection,
    statements: Sequence[duckdb.Statement],
    parameters: Mapping[str, str | None],
) -> SqlResult:
    import duckdb

    total = len(statements)
    if total == 0:
        return SqlResult(
            statements=0,
            statement_type=None,
            row_count=0,
            columns=(),
            preview=(),
            truncated=False,
            bookmark=None,
        )
    for number, statement in enumerate(statements, start=1):
        used = {name: parameters[name] for name in statement.named_parameters}
        try:
            cursor = connection.execute(statement, used or None)
            if number == total:
                return _describe(cursor, statement, total)
        except duckdb.Error as exc:
            raise SqlRunFailed(f"statement {number} of {total} failed: {exc}") from exc
    raise AssertionError("unreachable: the last statement returns")


def _describe(
    cursor: duckdb.DuckDBPyConnection, statement: duckdb.Statement, total: int
) -> SqlResult:
    import duckdb

    statement_type = statement.type.name
    description = cursor.description or []
    columns = tuple(str(column[0]) for column in description)
    changes_rows = duckdb.ExpectedResultType.CHANGED_ROWS in statement.expected_result_type
    if statement_type != "SELECT" and changes_rows and columns == ("Count",):
        row = cursor.fetchone()
        affected = int(row[0]) if row is not None and row[0] is not None else 0
        return SqlResult(
            statements=total,
            statement_type=statement_type,
            row_count=affected,
            columns=(),
            preview=(),
            truncated=False,
            bookmark=None,
        )
    head = [[_json_safe(value) for value in row] for row in cursor.fetchmany(PREVIEW_ROWS)]
    row_count = len(head) + sum(len(batch) for batch in _batches(cursor))
    preview = fit_preview(head)
    bookmark_index = next((i for i, name in enumerate(columns) if name.lower() == "bookmark"), None)
    bookmark = head[0][bookmark_index] if head and bookmark_index is not None else None
    return SqlResult(
        statements=total,
        statement_type=statement_type,
        row_count=row_count,
        columns=columns,
        preview=tuple(preview),
        truncated=len(preview) < row_count,
        bookmark=bookmark,
    )


def _batches(cursor: duckdb.DuckDBPyConnection) -> Iterator[list[Any]]:
    while batch := cursor.fetchmany(_FETCH_BATCH):
        yield batch


def fit_preview(rows: Sequence[list[JsonValue]]) -> list[list[JsonValue]]:
    """The leading rows of `rows` (at most 20) whose JSON array fits in 64 KiB."""
    kept: list[list[JsonValue]] = []
    size = 2  # the enclosing brackets
    for row in rows[:PREVIEW_ROWS]:
        size += len(json.dumps(row).encode("utf-8")) + (1 if kept else 0)
        if size > PREVIEW_BYTES:
            break
        kept.append(row)
    return kept


def _json_safe(value: Any) -> JsonValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    return str(value)


def write_json(path: Path, value: JsonValue) -> None:
    """Write `value` to `path` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)


def render_summary(result: SqlResult) -> str:
    """A short human summary of `result` followed by its preview, tab-separated."""
    if result.statements == 0:
        return "no statements to run\n"
    lines = [f"{result.statements} statement(s) ran; the last ({result.statement_type}) "]
    if not result.columns:
        lines[0] += f"affected {result.row_count} row(s)"
        return lines[0] + "\n"
    lines[0] += f"returned {result.row_count} row(s)"
    lines.append("\t".join(result.columns))
    lines.extend("\t".join(_cell(value) for value in row) for row in result.preview)
    if result.truncated:
        lines.append(f"... {result.row_count - len(result.preview)} more row(s) not shown")
    return "\n".join(lines) + "\n"


def _cell(value: JsonValue) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _locate_parse_error(sql: str) -> int | None:
    """The 1-based number of the first statement DuckDB cannot parse, or None."""
    import duckdb

    number = 0
    for text in split_statements(sql):
        try:
            parsed = duckdb.extract_statements(text)
        except duckdb.Error:
            return number + 1
        number += len(parsed)
    return None


def split_statements(sql: str) -> list[str]:
    """Split `sql` at semicolons outside quotes, comments and dollar-quoted strings.

    Used only to say which statement DuckDB could not parse; DuckDB's parser does the
    real split.
    """
    pieces: list[str] = []
    start = index = 0
    length = len(sql)
    while index < length:
        char = sql[index]
        if char in "'\"":
            index = _skip_past(sql, index + 1, char)
        elif sql.startswith("--", index):
            index = _skip_past(sql, index + 2, "\n")
        elif sql.startswith("/*", index):
            index = _skip_past(sql, index + 2, "*/")
        elif char == "$" and (tag_end := _dollar_tag_end(sql, index)) is not None:
            index = _skip_past(sql, tag_end, sql[index:tag_end])
        elif char == ";":
            pieces.append(sql[start : index + 1])
            start = index = index + 1
        else:
            index += 1
    pieces.append(sql[start:])
    return [piece for piece in pieces if piece.strip(" \t\r\n;")]


def _skip_past(sql: str, index: int, closing: str) -> int:
    found = sql.find(closing, index)
    return len(sql) if found < 0 else found + len(closing)


def _dollar_tag_end(sql: str, index: int) -> int | None:
    """End of a ``$tag$`` opening at `index`, or None when `$` starts a parameter."""
    end = index + 1
    while end < len(sql) and (sql[end].isalnum() or sql[end] == "_"):
        end += 1
    if end < len(sql) and sql[end] == "$" and not sql[index + 1 : end].isdigit():
        return end + 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the run directory named in `argv`; returns the process exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m reconciler.targets.local.sqlrun RUN_DIR\n")
        return EXIT_FAILED
    run_dir = Path(args[0])
    try:
        request = load_request(run_dir)
        result = run_sql(request)
    except SqlRunFailed as exc:
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    try:
        if request.bookmark_out is not None and result.bookmark is not None:
            write_json(request.bookmark_out, result.bookmark)
        write_json(run_dir / "result.json", result.to_json())
    except OSError as exc:
        sys.stderr.write(f"cannot write the run's results: {exc}\n")
        return EXIT_FAILED
    sys.stdout.write(render_summary(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
