"""SQL helpers shared by the comparison engine, the expectation check and storage.

Identifier quoting, a query that fails with a :class:`ComparisonError`, key values as JSON can
hold them, and a guard that keeps DuckDB from taking Python variables for tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb

from eventstore.failures import first_line
from eventstore.quoting import quote_identifier
from warehouse.errors import ComparisonError

__all__ = ["plain", "quote_identifier", "run", "sql_names_only"]


def plain(value: Any) -> Any:
    """A key value as JSON can hold it: str/int/float/bool/None as they are, anything else as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def run(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> tuple[Any, ...] | None:
    """The first row of ``sql``; a DuckDB error becomes a :class:`ComparisonError` saying ``could not <what>``."""
    try:
        return con.execute(sql).fetchone()
    except duckdb.Error as error:
        raise ComparisonError(f"could not {what}: {first_line(error)}") from error


@contextmanager
def sql_names_only(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Switch off DuckDB's Python replacement scans for the duration.

    Otherwise a missing table named like one of our local variables (``events``, ``a``) would be
    "found" in the calling module's frame instead of failing with a clear error.
    """
    row = con.execute("SELECT current_setting('python_enable_replacements')").fetchone()
    before = bool(row[0]) if row else True
    con.execute("SET python_enable_replacements = false")
    try:
        yield
    finally:
        con.execute(f"SET python_enable_replacements = {'true' if before else 'false'}")
