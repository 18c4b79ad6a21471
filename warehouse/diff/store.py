"""Storage of comparisons: ``<schema>.comparisons`` and ``<schema>.comparison_samples``.

:func:`record` appends a :class:`~warehouse.diff.model.Comparison` (its JSON report and one row
per sample) in a transaction of its own; the promotion gate looks for these rows in
``meta.comparisons``.
"""

from __future__ import annotations

import json
import re
import uuid

import duckdb

from eventstore.failures import first_line
from warehouse.diff.model import Comparison
from warehouse.diff.sql import quote_identifier
from warehouse.errors import ComparisonError
from warehouse.lake import transaction

__all__ = ["record"]


def record(con: duckdb.DuckDBPyConnection, comparison: Comparison, schema: str = "meta") -> str:
    """Store ``comparison`` in ``<schema>.comparisons`` and its samples beside it; returns its id.

    Works on DuckLake (no constraints, no sequences): ids are UUIDs made here, and both
    tables are created when missing. Runs in a transaction of its own on a cursor of ``con``,
    so a transaction the caller left open neither blocks nor swallows it.
    """
    cursor = con.cursor()
    try:
        return _record(cursor, comparison, schema)
    finally:
        cursor.close()


def _record(con: duckdb.DuckDBPyConnection, comparison: Comparison, schema: str) -> str:
    target = _qualified(schema)
    comparisons, samples_table = f"{target}.comparisons", f"{target}.comparison_samples"
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {target}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {comparisons} (comparison_id UUID, created_at TIMESTAMPTZ, a VARCHAR, "
            "b VARCHAR, keys VARCHAR[], rows_only_in_a BIGINT, rows_only_in_b BIGINT, rows_changed BIGINT, "
            "rows_identical BIGINT, schema_changed BOOLEAN, report JSON)"
        )
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {samples_table} (comparison_id UUID, class VARCHAR, ordinal INTEGER, "
            "key JSON, columns VARCHAR[], a JSON, b JSON, trail JSON)"
        )
    except duckdb.Error as error:
        raise ComparisonError(f"cannot create the comparison tables in {schema!r}: {first_line(error)}") from error
    comparison_id = str(uuid.uuid4())
    counts = comparison.counts()
    s = comparison.schema
    report = comparison.to_dict()
    sample_rows = [
        (
            comparison_id,
            row_class,
            i,
            json.dumps(item["key"]),
            item["columns"],
            None if item["a"] is None else json.dumps(item["a"]),
            None if item["b"] is None else json.dumps(item["b"]),
            None if item["trail"] is None else json.dumps(item["trail"]),
        )
        for row_class, items in report["samples"].items()
        for i, item in enumerate(items)
    ]
    with transaction(con):
        con.execute(
            f"INSERT INTO {comparisons} VALUES (?::UUID, ?::TIMESTAMPTZ, ?, ?, ?, ?, ?, ?, ?, ?, ?::JSON)",
            [
                comparison_id,
                comparison.compared_at,
                comparison.a,
                comparison.b,
                comparison.keys,
                counts["only_in_a"],
                counts["only_in_b"],
                counts["changed"],
                counts["identical"],
                bool(s.added or s.removed or s.type_changed),
                json.dumps(report),
            ],
        )
        if sample_rows:
            # One statement, so that a lake writes one data file for all samples.
            placeholders = ", ".join(["(?::UUID, ?, ?, ?::JSON, ?, ?::JSON, ?::JSON, ?::JSON)"] * len(sample_rows))
            con.execute(f"INSERT INTO {samples_table} VALUES {placeholders}", [v for row in sample_rows for v in row])
    return comparison_id


def _qualified(name: str) -> str:
    parts = name.split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts) or len(parts) > 2:
        raise ComparisonError(f"schema {name!r} must be a name or catalog.name of letters, digits and underscores.")
    return ".".join(quote_identifier(p) for p in parts)
