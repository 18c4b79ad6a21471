"""Compare two versions of a table row by row, and explain every difference (see docs/diff.md).

The package, one idea per module:

- :mod:`~warehouse.diff.model`: the result (:class:`Comparison` and its parts) and its JSON form;
- :mod:`~warehouse.diff.compare`: the engine, :func:`compare`, all in DuckDB SQL;
- :mod:`~warehouse.diff.expectations`: declared changes, :func:`check_expectation`;
- :mod:`~warehouse.diff.store`: :func:`record`, comparisons kept in ``<schema>.comparisons``;
- :mod:`~warehouse.diff.report`: text, markdown and HTML renderings of a comparison;
- :mod:`~warehouse.diff.projection_versions`: two versions of a projection in the lake, compared
  for the promotion gate;
- :mod:`~warehouse.diff.sql`: SQL helpers the modules above share.

The names below are the package's public API; import them from ``warehouse.diff``.
"""

from warehouse.diff.compare import TrailSpec, compare
from warehouse.diff.expectations import Expectation, ExpectationResult, check_expectation
from warehouse.diff.model import (
    SCHEMA_VERSION,
    ColumnStats,
    ColumnType,
    Comparison,
    DeltaStats,
    DuplicateKey,
    DuplicateKeyError,
    KeyReport,
    RowClass,
    Sample,
    SchemaDiff,
    Trail,
    TypeChange,
)
from warehouse.diff.projection_versions import compare_versions, expectation_for, resolve_pair
from warehouse.diff.report import render_html, render_markdown, render_text
from warehouse.diff.store import record

__all__ = [
    "SCHEMA_VERSION",
    "ColumnStats",
    "ColumnType",
    "Comparison",
    "DeltaStats",
    "DuplicateKey",
    "DuplicateKeyError",
    "Expectation",
    "ExpectationResult",
    "KeyReport",
    "RowClass",
    "Sample",
    "SchemaDiff",
    "Trail",
    "TrailSpec",
    "TypeChange",
    "check_expectation",
    "compare",
    "compare_versions",
    "expectation_for",
    "record",
    "render_html",
    "render_markdown",
    "render_text",
    "resolve_pair",
]
