"""Declared changes: what a new version may change, and whether a comparison stays inside it.

An :class:`Expectation` lists the allowed value changes (:class:`projections.ExpectedChange`, the
one declared-changes model: columns that may differ, and the SQL predicate over ``a.<col>``/``b.<col>``
on whose rows they may; a projection version declares the same objects) and the schema and row
changes allowed; :func:`check_expectation` re-checks the full data of a comparison against
it and returns an :class:`ExpectationResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb

from projections.definition import ExpectedChange
from warehouse.diff.compare import Plan, key_report, source
from warehouse.diff.model import Comparison
from warehouse.diff.sql import plain, quote_identifier, run, sql_names_only
from warehouse.errors import ComparisonError

__all__ = ["Expectation", "ExpectationResult", "check_expectation"]


@dataclass(frozen=True)
class Expectation:
    """What a new version is allowed to change; anything else is a violation."""

    changes: list[ExpectedChange] = field(default_factory=list)
    added_columns: list[str] = field(default_factory=list)
    removed_columns: list[str] = field(default_factory=list)
    retyped_columns: list[str] = field(default_factory=list)
    allow_removed_rows: bool = False
    allow_added_rows: bool = False


@dataclass(frozen=True)
class ExpectationResult:
    """Whether every observed difference stays inside the expectation, and what does not."""

    satisfied: bool
    problems: list[str]
    violating_rows: int
    violations_by_column: dict[str, int]
    violating_keys: list[dict[str, Any]]

    def __str__(self) -> str:
        if self.satisfied:
            return "expectation satisfied: every difference is declared"
        return "expectation violated:\n" + "\n".join(f"  - {p}" for p in self.problems)


def check_expectation(
    con: duckdb.DuckDBPyConnection, comparison: Comparison, expectation: Expectation
) -> ExpectationResult:
    """Check that every difference ``comparison`` found is allowed by ``expectation``.

    Column changes are re-checked over the full data (the rules' predicates need whole rows), with
    the same keys, tolerances and duplicate policy as the comparison.
    """
    with sql_names_only(con):
        return _check_expectation(con, comparison, expectation)


def _check_expectation(
    con: duckdb.DuckDBPyConnection, comparison: Comparison, expectation: Expectation
) -> ExpectationResult:
    problems: list[str] = []
    s = comparison.schema
    for kind, columns, allowed in (
        ("added", [c.name for c in s.added], expectation.added_columns),
        ("removed", [c.name for c in s.removed], expectation.removed_columns),
        ("retyped", [c.name for c in s.type_changed], expectation.retyped_columns),
    ):
        undeclared = [c for c in columns if c not in allowed]
        if undeclared:
            problems.append(f"column(s) {undeclared} {kind} without being declared in {kind}_columns")
    violating_keys: list[dict[str, Any]] = []
    for row_class, allowed_rows, word in (
        ("only_in_a", expectation.allow_removed_rows, "removed (only in A)"),
        ("only_in_b", expectation.allow_added_rows, "added (only in B)"),
    ):
        n = comparison.rows[row_class].count
        if n and not allowed_rows:
            problems.append(f"{n} row(s) {word}, which the expectation does not allow")
            violating_keys += [sample.key for sample in comparison.samples[row_class]]

    plan = Plan.build(con, comparison.a, comparison.b, comparison.keys, comparison.tolerances)
    known = {c.name for c in plan.compared}
    for rule in expectation.changes:
        unknown = [c for c in rule.columns if c not in known]
        if unknown:
            raise ComparisonError(
                f"expectation names column(s) {unknown} that are not compared columns of both sides "
                f"(compared: {sorted(known)})."
            )
    violation_flags = []
    for j, column in enumerate(plan.compared):
        col = quote_identifier(column.name)
        mismatch = plan.mismatch(j, f"a.{col}", f"b.{col}")
        allowed = [f"({rule.where})" for rule in expectation.changes if column.name in rule.columns]
        flag = mismatch if not allowed else f"({mismatch} AND NOT coalesce({' OR '.join(allowed)}, false))"
        violation_flags.append(flag)
    by_column: dict[str, int] = {}
    violating_rows = 0
    if violation_flags:
        reports = {
            "a": key_report(con, plan.a_sql, plan.keys, 0),
            "b": key_report(con, plan.b_sql, plan.keys, 0),
        }
        a_src = source(plan.a_sql, plan.keys, reports["a"], comparison.duplicate_keys)
        b_src = source(plan.b_sql, plan.keys, reports["b"], comparison.duplicate_keys)
        any_violation = " OR ".join(violation_flags)
        key_struct = (
            "struct_pack(" + ", ".join(f"{quote_identifier(k)} := a.{quote_identifier(k)}" for k in plan.keys) + ")"
        )
        size = max(comparison.sample_size, 1)
        sql = (
            "SELECT count(*) FILTER (WHERE "
            + any_violation
            + "), "
            + ", ".join(f"count(*) FILTER (WHERE {flag})" for flag in violation_flags)
            + f", min({key_struct}, {size}) FILTER (WHERE {any_violation}) "
            f"FROM {a_src} AS a JOIN {b_src} AS b ON {plan.key_match('a', 'b')}"
        )
        row = run(con, sql, "check the expectation (is every `where` valid SQL over a.<col> and b.<col>?)")
        assert row is not None
        violating_rows = int(row[0])
        by_column = {c.name: int(n) for c, n in zip(plan.compared, row[1 : 1 + len(plan.compared)], strict=True) if n}
        if violating_rows:
            detail = ", ".join(f"{name}: {n}" for name, n in by_column.items())
            problems.append(f"{violating_rows} changed row(s) differ outside the declared changes ({detail})")
            violating_keys += [{k: plain(v) for k, v in item.items()} for item in row[-1] or []]
    return ExpectationResult(not problems, problems, violating_rows, by_column, violating_keys)
