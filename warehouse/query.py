"""Running analysts' SQL on the lake and printing the answer: a table, JSON, CSV, or an interactive shell."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

import duckdb

from eventstore.quoting import quote_literal
from warehouse.errors import LakeConfigurationError

__all__ = [
    "ANALYST_SCHEMAS_ENV",
    "QueryResult",
    "analyst_scope",
    "check_scope",
    "format_csv",
    "format_json",
    "format_table",
    "run_query",
    "sandbox",
    "shell",
    "stream_reader",
    "terminal_reader",
]


@dataclass(frozen=True)
class QueryResult:
    """Column names and rows of one query."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


#: The fix a refused statement of the analyst sandbox names.
_SANDBOXED = (
    "This session is read-only (the analyst sandbox: no files outside the lake, no ATTACH, no settings, "
    "no extensions); an operator gets a writable session with `projectionist shell --write`"
)


def sandbox(con: duckdb.DuckDBPyConnection, data_path: str, temp_directory: Path) -> None:
    """Lock an analyst's session on a read-only lake with DuckDB's own switches, then lock the configuration.

    After this, DuckDB refuses file access outside the lake's data (``COPY ... TO``, ``read_text``,
    ``glob``, ``EXPORT``), attaching databases (the event store, the lake again writable), installing
    or loading extensions, and any ``SET``. Everything a read-only analyst needs stays: every schema
    of the lake, time travel, ``EXPLAIN``, tables of their own in the in-memory database.
    ``temp_directory`` (private, under the home) is where DuckDB may spill large intermediate results.
    """
    temp_directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    allowed = [data_path]  # a local folder or an object-storage prefix (s3://bucket/prefix/)
    quoted = ", ".join(quote_literal(path) for path in allowed)
    for statement in (
        "SET temp_directory = " + quote_literal(str(temp_directory)),
        f"SET allowed_directories = [{quoted}]",
        "SET autoinstall_known_extensions = false",
        "SET autoload_known_extensions = false",
        "SET enable_external_access = false",
        "SET lock_configuration = true",
    ):
        con.execute(statement)


#: Limits the analyst path (`sql`, `shell` without --write) to these schemas of the lake, e.g. "analytics,public".
ANALYST_SCHEMAS_ENV = "PROJECTIONIST_ANALYST_SCHEMAS"
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def analyst_scope(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The schemas ``PROJECTIONIST_ANALYST_SCHEMAS`` allows an analyst to name (None: unset, every schema)."""
    raw = (os.environ if environ is None else environ).get(ANALYST_SCHEMAS_ENV, "").strip()
    if not raw:
        return None
    schemas = tuple(part.strip().lower() for part in raw.split(",") if part.strip())
    bad = [s for s in schemas if not _SCHEMA.match(s)]
    if bad or not schemas:
        raise LakeConfigurationError(
            f"{ANALYST_SCHEMAS_ENV}={raw!r} must list schema names separated by commas, e.g. analytics,public"
        )
    return schemas


def _references(node: Any, tables: list[tuple[str, str]], functions: list[str], ctes: set[str]) -> None:
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            tables.append((str(node.get("schema_name") or ""), str(node.get("table_name") or "")))
        elif kind == "TABLE_FUNCTION":
            function = node.get("function")
            functions.append(str(function.get("function_name")) if isinstance(function, dict) else "?")
        for entry in (node.get("cte_map") or {}).get("map", []) if isinstance(node.get("cte_map"), dict) else []:
            ctes.add(str(entry.get("key", "")).lower())
        for value in node.values():
            _references(value, tables, functions, ctes)
    elif isinstance(node, list):
        for value in node:
            _references(value, tables, functions, ctes)


def check_scope(con: duckdb.DuckDBPyConnection, query: str, schemas: Sequence[str]) -> None:
    """Refuse ``query`` unless it is SELECTs naming tables and views of ``schemas`` only (no table functions).

    Read with DuckDB's own parser (``json_serialize_sql``): what it cannot serialize (anything but a
    SELECT: PIVOT, PRAGMA, COPY, ...) is refused, so the check fails closed. The views named may read
    other schemas (``analytics.events_*`` read raw): the analyst sees only what the views show.
    """
    allowed = ", ".join(schemas)
    row = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [query]).fetchone()
    tree = json.loads(row[0]) if row and row[0] else {"error": True, "error_message": "nothing to read"}
    if tree.get("error"):
        raise QuerySQLError(
            f"this session may only run SELECT statements over {allowed} ({ANALYST_SCHEMAS_ENV}); DuckDB read: "
            f"{tree.get('error_message', 'not a SELECT')}"
        )
    tables: list[tuple[str, str]] = []
    functions: list[str] = []
    ctes: set[str] = set()
    _references(tree, tables, functions, ctes)
    if functions:
        raise QuerySQLError(
            f"this session may not call table functions ({', '.join(sorted(set(functions)))}): it reads the views "
            f"and tables of {allowed} only ({ANALYST_SCHEMAS_ENV})"
        )
    outside = sorted(
        {
            f"{schema}.{table}" if schema else table
            for schema, table in tables
            if not (not schema and table.lower() in ctes) and (schema or "main").lower() not in schemas
        }
    )
    if outside:
        raise QuerySQLError(
            f"{', '.join(outside)} is outside this session's schemas ({allowed}, set by {ANALYST_SCHEMAS_ENV}): "
            "query the analytics views, or ask an operator"
        )


def _refused_by_sandbox(exc: duckdb.Error) -> bool:
    text = str(exc)
    return isinstance(exc, duckdb.PermissionException) or "configuration has been locked" in text


def run_query(con: duckdb.DuckDBPyConnection, query: str, scope: Sequence[str] | None = None) -> QueryResult:
    """Run ``query`` (the last statement's rows are returned); SQL mistakes become a clear TerminalError.

    With ``scope`` (:func:`analyst_scope`), a statement naming anything outside those schemas is refused first.
    """
    if scope is not None:
        check_scope(con, query, scope)
    try:
        cursor = con.execute(query)
        if cursor is None:  # DuckDB found no statement: only whitespace, comments or semicolons
            raise QuerySQLError(
                f"the query {query.strip()[:40]!r} holds no SQL statement: give one, e.g. "
                'projectionist sql "SELECT count(*) FROM raw.events"'
            )
        columns = [str(d[0]) for d in cursor.description] if cursor.description else []
        return QueryResult(columns, cursor.fetchall() if columns else [])
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()
        if _refused_by_sandbox(exc):
            raise QuerySQLError(f"the query was refused: {first[0] if first else exc}. {_SANDBOXED}") from exc
        raise QuerySQLError(f"the query failed: {' '.join(first[:3])}") from exc


class QuerySQLError(LakeConfigurationError):
    """Raised when an analyst's SQL cannot run (syntax, unknown table, read-only lake)."""


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_table(result: QueryResult, max_width: int = 60) -> str:
    """A plain text table, psql style, ending with a row count."""
    cells = [[_text(v) for v in row] for row in result.rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(result.columns)]
    numeric = [
        all(isinstance(row[i], int | float | Decimal) or row[i] is None for row in result.rows) and bool(result.rows)
        for i in range(len(result.columns))
    ]
    lines = [" | ".join(name.ljust(w) for name, w in zip(result.columns, widths, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            " | ".join(
                c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
    lines.append(f"({len(result.rows)} row{'' if len(result.rows) == 1 else 's'})")
    return "\n".join(lines)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


def format_json(result: QueryResult) -> str:
    """A JSON array of row objects."""
    return json.dumps(
        [{c: _json_value(v) for c, v in zip(result.columns, row, strict=True)} for row in result.rows],
        indent=2,
        ensure_ascii=False,
    )


def format_csv(result: QueryResult) -> str:
    """CSV with a header row; NULL is the empty field."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else _json_value(v) for v in row])
    return out.getvalue()


_SHELL_HELP = """Enter SQL ending with ';' (the lake is the default catalog: raw.events, analytics.*, meta.*).
  .tables    list tables and views with their comments
  .help      this help
  .quit      leave (also Ctrl-D)"""

_TABLES = (
    "SELECT schema_name, table_name AS name, 'table' AS kind, comment FROM duckdb_tables() "
    "WHERE database_name = 'lake' UNION ALL SELECT schema_name, view_name, 'view', comment FROM duckdb_views() "
    "WHERE database_name = 'lake' AND NOT internal ORDER BY 1, 2"
)


def shell(
    con: duckdb.DuckDBPyConnection,
    read_line: Callable[[str], str | None],
    write: Callable[[str], None],
    scope: Sequence[str] | None = None,
) -> int:
    """A small DuckDB REPL: ``read_line(prompt)`` gives lines (None at the end); returns failed statements.

    A statement ends with ``;``; at the end of the input a last statement without one runs too
    (``echo "SELECT 1" | projectionist shell`` answers rather than printing nothing).
    """
    failures = 0
    buffer: list[str] = []

    def run_buffer() -> None:
        nonlocal failures
        try:
            result = run_query(con, "\n".join(buffer), scope)
            write(format_table(result) if result.columns else "ok")
        except QuerySQLError as exc:
            failures += 1
            write(f"error: {exc}")
        buffer.clear()

    while (line := read_line("   ...> " if buffer else "lake> ")) is not None:
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            command = stripped.split()[0]
            if command in (".quit", ".exit"):
                return failures
            if command == ".tables":
                write(format_table(run_query(con, _TABLES)))
            else:
                write(_SHELL_HELP)
        elif stripped:
            buffer.append(line.rstrip("\n"))
            if stripped.endswith(";"):
                run_buffer()
    if any(not line.strip().startswith("--") for line in buffer):
        run_buffer()
    return failures


def stream_reader(stream: TextIO) -> Callable[[str], str | None]:
    """``read_line`` for :func:`shell` over a non-interactive stream (the prompt is not shown)."""

    def read_line(prompt: str) -> str | None:
        line = stream.readline()
        return line if line else None

    return read_line


def terminal_reader() -> Callable[[str], str | None]:
    """``read_line`` for :func:`shell` on a terminal: ``input()`` with line editing where available."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  line editing and history for input()

    def read_line(prompt: str) -> str | None:
        try:
            return input(prompt)
        except EOFError:
            print()
            return None

    return read_line
