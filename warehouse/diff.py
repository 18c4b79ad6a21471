"""Compare two versions of a table row by row, and explain every difference.

``compare(con, a, b, keys)`` matches the rows of two relations by key in DuckDB and returns a
:class:`Comparison`: the schema diff, the key health of each side (null and duplicate keys,
checked before any row is compared), the row classes (only in A, only in B, changed,
identical), per-column match counts, the distribution of numeric deltas, a deterministic
sample of each class and, for sampled differing keys, the trail of events that fed them.

All counting happens in SQL. The one pass over the full data is a FULL OUTER JOIN on the keys
that keeps only the rows that differ somewhere (``IS DISTINCT FROM`` per column) in a temporary
table; with a few percent of differences that table is small, and every statistic, sample and
trail is computed from it. Identical rows are counted, never copied.

Rows whose key holds a NULL cannot be matched: they are counted, sampled and left out.
A relation with duplicate keys is refused by default (:class:`DuplicateKeyError` carries the
counts and samples); with ``duplicate_keys="first"`` the comparison keeps, per key, the row
that sorts first on all its columns, and the report says how many rows were set aside.

Renderers (text, markdown, HTML) live in :mod:`warehouse.diff_report`; storage in
``<schema>.comparisons`` / ``<schema>.comparison_samples`` is :func:`record`; declared
expectations are checked by :func:`check_expectation`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb

from eventstore.failures import first_line
from warehouse.errors import ComparisonError, DuplicateKeyError

__all__ = [
    "SCHEMA_VERSION",
    "AllowedChange",
    "ColumnStats",
    "ColumnType",
    "Comparison",
    "DeltaStats",
    "DuplicateKey",
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
    "record",
]

SCHEMA_VERSION = 1
ROW_CLASSES = ("only_in_a", "only_in_b", "changed", "identical")
HISTOGRAM_BINS = 20
DuplicatePolicy = Literal["refuse", "first"]

_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL.*)$"
)
_INTEGER = re.compile(r"^U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)$")
_QUERY = re.compile(r"^\s*(\(|select\b|with\b|from\b|values\b|table\b|pivot\b|unpivot\b)", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnType:
    """A column name and its DuckDB type."""

    name: str
    type: str


@dataclass(frozen=True)
class TypeChange:
    """A column present on both sides with a different type."""

    name: str
    a_type: str
    b_type: str


@dataclass(frozen=True)
class SchemaDiff:
    """Columns added (only in B), removed (only in A) and retyped (on both, type differs)."""

    added: list[ColumnType]
    removed: list[ColumnType]
    type_changed: list[TypeChange]
    common: list[ColumnType]


@dataclass(frozen=True)
class DuplicateKey:
    """One key held by several rows of a relation."""

    key: dict[str, Any]
    rows: int


@dataclass(frozen=True)
class KeyReport:
    """Key health of one side: null keys and duplicate keys, found before any row is compared."""

    rows: int
    distinct_keys: int
    null_key_rows: int
    duplicate_keys: int
    duplicate_rows: int
    null_key_sample: list[dict[str, Any]]
    duplicate_sample: list[DuplicateKey]

    @property
    def rows_set_aside(self) -> int:
        """Rows not compared: those with a null key, and all but one row of each duplicated key."""
        return self.null_key_rows + self.duplicate_rows - self.duplicate_keys


@dataclass(frozen=True)
class RowClass:
    """How many keys fall in one class, and their share of all keys of A ∪ B."""

    count: int
    percent: float


@dataclass(frozen=True)
class DeltaStats:
    """Distribution of B−A over the rows where a numeric column differs beyond its tolerance."""

    count: int
    min: float
    p50: float
    p95: float
    max: float
    sum: float
    histogram_edges: list[float]
    histogram_counts: list[int]


@dataclass(frozen=True)
class ColumnStats:
    """Match counts of one column over the rows present on both sides."""

    name: str
    a_type: str
    b_type: str
    compared_rows: int
    matches: int
    mismatches: int
    null_on_one_side: int
    tolerated: int
    tolerance: float | None
    delta: DeltaStats | None

    @property
    def match_percent(self) -> float:
        """Share of compared rows where the column matches (100 when there are none)."""
        return _percent(self.matches, self.compared_rows, empty=100.0)


@dataclass(frozen=True)
class Trail:
    """The events that fed one key: streams, count, position range, event types with counts."""

    streams: list[str]
    events: int
    first_position: int | None
    last_position: int | None
    event_types: dict[str, int]


@dataclass(frozen=True)
class Sample:
    """One sampled key of a class; ``a``/``b`` hold values as text (None when absent or NULL)."""

    key: dict[str, Any]
    columns: list[str]
    a: dict[str, str | None] | None
    b: dict[str, str | None] | None
    trail: Trail | None = None


@dataclass(frozen=True)
class Comparison:
    """Everything ``compare`` found about two relations; see docs/diff.md for the JSON form."""

    a: str
    b: str
    keys: list[str]
    compared_at: str
    tolerances: dict[str, float]
    sample_size: int
    duplicate_keys: DuplicatePolicy
    trail_events: str | None
    schema: SchemaDiff
    key_reports: dict[str, KeyReport]
    rows: dict[str, RowClass]
    columns: list[ColumnStats]
    samples: dict[str, list[Sample]]

    @property
    def total_keys(self) -> int:
        """Keys of A ∪ B that took part in the comparison."""
        return sum(c.count for c in self.rows.values())

    @property
    def differs(self) -> bool:
        """True when the schema or any row differs."""
        s = self.schema
        return bool(s.added or s.removed or s.type_changed or any(self.rows[c].count for c in ROW_CLASSES[:3]))

    def counts(self) -> dict[str, int]:
        """Row counts per class."""
        return {name: self.rows[name].count for name in ROW_CLASSES}

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (``schema_version`` 1, documented in docs/diff.md)."""
        return _to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON text, keys in a stable order."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> Comparison:
        """Read a report written by :meth:`to_json`."""
        return _from_dict(json.loads(text) if isinstance(text, str) else text)

    def to_text(self) -> str:
        """A plain-text report for a terminal."""
        from warehouse.diff_report import render_text

        return render_text(self)

    def to_markdown(self) -> str:
        """A markdown report (Dagster metadata, pull requests)."""
        from warehouse.diff_report import render_markdown

        return render_markdown(self)

    def to_html(self) -> str:
        """A self-contained HTML report with an inline SVG histogram per numeric column."""
        from warehouse.diff_report import render_html

        return render_html(self)

    def __str__(self) -> str:
        return self.to_text()


@dataclass(frozen=True)
class TrailSpec:
    """Where the events of a key are: an events relation and a join predicate.

    ``predicate`` is SQL over ``e`` (a row of ``events``) and ``k`` (a key, with the key
    columns under their own names). The default, for a single key column, is
    ``e.stream_id = k.<key>``: the key is the stream id, as for ``cart_summary.cart_id``.
    """

    events: str = "lake.raw.events"
    predicate: str | None = None


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def compare(
    con: duckdb.DuckDBPyConnection,
    a: str,
    b: str,
    keys: Sequence[str],
    *,
    tolerances: dict[str, float] | None = None,
    sample_size: int = 5,
    trail: TrailSpec | None = None,
    duplicate_keys: DuplicatePolicy = "refuse",
) -> Comparison:
    """Compare relations ``a`` (the live version) and ``b`` (the candidate) row by row on ``keys``."""
    keys = list(keys)
    tolerances = dict(tolerances or {})
    if sample_size < 0:
        raise ComparisonError(f"sample_size must be 0 or more, not {sample_size}.")
    if duplicate_keys not in ("refuse", "first"):
        raise ComparisonError(f"duplicate_keys must be 'refuse' or 'first', not {duplicate_keys!r}.")
    with _sql_names_only(con):
        return _compare(con, a, b, keys, tolerances, sample_size, trail, duplicate_keys)


def _compare(
    con: duckdb.DuckDBPyConnection,
    a: str,
    b: str,
    keys: list[str],
    tolerances: dict[str, float],
    sample_size: int,
    trail: TrailSpec | None,
    duplicate_keys: DuplicatePolicy,
) -> Comparison:
    plan = _Plan.build(con, a, b, keys, tolerances)
    if trail is not None:
        _trail_predicate(plan, trail)  # a bad trail spec fails before the full pass, not after
    key_reports = {
        "a": _key_report(con, plan.a_sql, keys, sample_size),
        "b": _key_report(con, plan.b_sql, keys, sample_size),
    }
    _check_duplicates(a, b, key_reports, duplicate_keys)
    a_src = _source(plan.a_sql, keys, key_reports["a"], duplicate_keys)
    b_src = _source(plan.b_sql, keys, key_reports["b"], duplicate_keys)
    with _temp_names(con, 3) as (diff_table, classified, sample_table):
        _create_diff_table(con, diff_table, plan, a_src, b_src)
        con.execute(f"CREATE TEMP TABLE {classified} AS SELECT * FROM {_classified(plan, diff_table)}")
        n_a = key_reports["a"].distinct_keys
        counts = _row_counts(con, classified)
        common = n_a - counts["only_in_a"]
        counts["identical"] = common - counts["changed"]
        total = n_a + counts["only_in_b"]
        rows = {name: RowClass(counts[name], _percent(counts[name], total)) for name in ROW_CLASSES}
        columns = _column_stats(con, plan, classified, common)
        samples = _samples(con, plan, classified, sample_table, a_src, sample_size)
        if trail is not None:
            samples = _attach_trails(con, plan, sample_table, samples, trail)
    return Comparison(
        a=a,
        b=b,
        keys=keys,
        compared_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        tolerances=tolerances,
        sample_size=sample_size,
        duplicate_keys=duplicate_keys,
        trail_events=trail.events if trail is not None else None,
        schema=plan.schema,
        key_reports=key_reports,
        rows=rows,
        columns=columns,
        samples=samples,
    )


@dataclass(frozen=True)
class _Plan:
    """The resolved inputs: relation SQL, schemas, and the columns to compare."""

    a_sql: str
    b_sql: str
    keys: list[str]
    schema: SchemaDiff
    compared: list[TypeChange]  # common non-key columns with both types (equal when unchanged)
    tolerances: dict[str, float]

    @classmethod
    def build(
        cls, con: duckdb.DuckDBPyConnection, a: str, b: str, keys: list[str], tolerances: dict[str, float]
    ) -> _Plan:
        a_sql, b_sql = _relation_sql(a), _relation_sql(b)
        a_cols, b_cols = _describe(con, a, a_sql, "A"), _describe(con, b, b_sql, "B")
        a_types, b_types = dict(a_cols), dict(b_cols)
        shared = [name for name, _ in a_cols if name in b_types]
        if not shared:
            raise ComparisonError(
                f"{a!r} and {b!r} share no column, so no key can match their rows: compare two versions "
                "of the same table."
            )
        if not keys:
            raise ComparisonError(f"no key column given: pass keys=[...] from the columns both share: {shared}.")
        for side, rel, types in (("A", a, a_types), ("B", b, b_types)):
            missing = [k for k in keys if k not in types]
            if missing:
                raise ComparisonError(
                    f"key column(s) {missing} not in {side} ({rel!r}); its columns are {list(types)}. "
                    f"Pick keys both sides share: {shared}."
                )
        compared = [TypeChange(n, a_types[n], b_types[n]) for n in shared if n not in keys]
        numeric = {c.name for c in compared if _is_numeric(c.a_type) and _is_numeric(c.b_type)}
        for name, tolerance in tolerances.items():
            if name not in numeric:
                raise ComparisonError(
                    f"tolerance given for {name!r}, which is not a numeric column of both sides "
                    f"(numeric columns compared: {sorted(numeric)})."
                )
            if not 0 <= tolerance < math.inf:
                raise ComparisonError(f"tolerance for {name!r} must be a finite number, 0 or more, not {tolerance}.")
        schema = SchemaDiff(
            added=[ColumnType(n, t) for n, t in b_cols if n not in a_types],
            removed=[ColumnType(n, t) for n, t in a_cols if n not in b_types],
            type_changed=[TypeChange(n, a_types[n], b_types[n]) for n in shared if a_types[n] != b_types[n]],
            common=[ColumnType(n, a_types[n]) for n in shared],
        )
        return cls(a_sql, b_sql, keys, schema, compared, tolerances)

    def numeric(self, column: TypeChange) -> bool:
        return _is_numeric(column.a_type) and _is_numeric(column.b_type)

    def distinct(self, j: int, a: str, b: str) -> str:
        """SQL flag: column ``j`` differs between expressions ``a`` and ``b`` (no tolerance)."""
        column = self.compared[j]
        if column.a_type != column.b_type and not self.numeric(column):
            # Different, non-numeric types: compare their text so that '5' and 5 match.
            return f"({a}::VARCHAR IS DISTINCT FROM {b}::VARCHAR)"
        return f"({a} IS DISTINCT FROM {b})"

    def tolerated(self, j: int, a: str, b: str) -> str | None:
        """SQL flag: both non-null and within the column's tolerance; None without a tolerance."""
        tolerance = self.tolerances.get(self.compared[j].name)
        if tolerance is None:
            return None
        return f"({a} IS NOT NULL AND {b} IS NOT NULL AND abs({b}::DOUBLE - {a}::DOUBLE) <= {float(tolerance)!r})"

    def mismatch(self, j: int, a: str, b: str) -> str:
        """SQL flag: column ``j`` differs beyond its tolerance."""
        tolerated = self.tolerated(j, a, b)
        distinct = self.distinct(j, a, b)
        return distinct if tolerated is None else f"({distinct} AND NOT {tolerated})"

    def delta(self, j: int, a: str, b: str) -> str:
        """SQL expression B−A, exact for integers and decimals."""
        column = self.compared[j]
        if _INTEGER.match(column.a_type) and _INTEGER.match(column.b_type):
            return f"({b}::HUGEINT - {a}::HUGEINT)"
        if column.a_type.startswith("DECIMAL") and column.b_type.startswith("DECIMAL"):
            return f"({b} - {a})"
        return f"({b}::DOUBLE - {a}::DOUBLE)"

    def key_match(self, left: str, right: str) -> str:
        return " AND ".join(f"{left}.{_q(k)} = {right}.{_q(k)}" for k in self.keys)

    def key_order(self) -> str:
        return ", ".join(f"k{i}" for i in range(len(self.keys)))


def _relation_sql(relation: str) -> str:
    """A relation as it can follow FROM: a name as given, a query in parentheses."""
    text = relation.strip().rstrip(";")
    if _QUERY.match(text):
        return text if text.startswith("(") else f"({text})"
    return text


def _describe(con: duckdb.DuckDBPyConnection, relation: str, sql: str, side: str) -> list[tuple[str, str]]:
    try:
        rows = con.execute(f"DESCRIBE SELECT * FROM {sql}").fetchall()
    except duckdb.Error as error:
        if not _is_missing(error):
            raise ComparisonError(
                f"relation {relation!r} ({side}) cannot be read: {first_line(error)}. Give a table or view name "
                "or a valid SELECT query."
            ) from error
        raise ComparisonError(
            f"relation {relation!r} ({side}) does not exist: give a table or view name, qualified when "
            f"needed (e.g. lake.projections.cart_summary_v1), or a SELECT query. DuckDB said: {first_line(error)}"
        ) from error
    return [(str(r[0]), str(r[1])) for r in rows]


def _key_report(con: duckdb.DuckDBPyConnection, sql: str, keys: list[str], sample_size: int) -> KeyReport:
    key_list = ", ".join(_q(k) for k in keys)
    any_null = " OR ".join(f"{_q(k)} IS NULL" for k in keys)
    key_struct = "struct_pack(" + ", ".join(f"{_q(k)} := {_q(k)}" for k in keys) + ")"
    # Only duplicated and null-key groups leave the GROUP BY: the outer aggregate stays tiny.
    row = con.execute(
        f"""
        WITH g AS (
            SELECT {key_list}, count(*) AS n FROM {sql} GROUP BY ALL HAVING count(*) > 1 OR {any_null}
        )
        SELECT (SELECT count(*) FROM {sql}),
               coalesce(sum(n) FILTER (WHERE {any_null}), 0),
               count(*) FILTER (WHERE NOT ({any_null})),
               coalesce(sum(n) FILTER (WHERE NOT ({any_null})), 0),
               min(struct_pack(k := {key_struct}, n := n), {max(sample_size, 1)}) FILTER (WHERE NOT ({any_null}))
        FROM g
        """
    ).fetchone()
    assert row is not None
    total, null_rows, dup_keys, dup_rows, dup_sample = row
    distinct = total - null_rows - (dup_rows - dup_keys)
    null_sample: list[dict[str, Any]] = []
    if null_rows and sample_size:
        cursor = con.execute(f"SELECT * FROM {sql} WHERE {any_null} ORDER BY ALL LIMIT {sample_size}")
        names = [d[0] for d in cursor.description or []]
        null_sample = [{n: _text(v) for n, v in zip(names, r, strict=True)} for r in cursor.fetchall()]
    duplicates = [
        DuplicateKey({k: _plain(v) for k, v in item["k"].items()}, int(item["n"])) for item in dup_sample or []
    ][:sample_size]
    return KeyReport(int(total), int(distinct), int(null_rows), int(dup_keys), int(dup_rows), null_sample, duplicates)


def _check_duplicates(a: str, b: str, reports: dict[str, KeyReport], policy: DuplicatePolicy) -> None:
    if policy != "refuse":
        return
    problems = []
    for side, relation in (("a", a), ("b", b)):
        report = reports[side]
        if report.duplicate_keys:
            sample = ", ".join(f"{d.key} ×{d.rows}" for d in report.duplicate_sample)
            problems.append(
                f"{side.upper()} ({relation!r}) holds {report.duplicate_keys} duplicated key(s) over "
                f"{report.duplicate_rows} rows (e.g. {sample})"
            )
    if problems:
        raise DuplicateKeyError(
            "; ".join(problems) + ". Rows cannot be matched one to one: add the missing key column(s) to keys, "
            "fix the projection, or pass duplicate_keys='first' to compare the first row of each key.",
            reports,
        )


def _source(sql: str, keys: list[str], report: KeyReport, policy: DuplicatePolicy) -> str:
    """The rows that take part: null keys left out; with policy 'first', one row per key."""
    where = ""
    if report.null_key_rows:
        where = " WHERE " + " AND ".join(f"{_q(k)} IS NOT NULL" for k in keys)
    if report.duplicate_keys and policy == "first":
        # Ordering by the whole row (as a struct) makes "first" deterministic whatever the columns.
        return (
            f"(SELECT * FROM {sql} AS r{where} QUALIFY row_number() OVER "
            f"(PARTITION BY {', '.join(_q(k) for k in keys)} ORDER BY r) = 1)"
        )
    if where:
        return f"(SELECT * FROM {sql}{where})"
    return sql


def _create_diff_table(con: duckdb.DuckDBPyConnection, table: str, plan: _Plan, a_src: str, b_src: str) -> None:
    """The single full pass: keep every key present on one side only or differing in some column."""
    k0 = _q(plan.keys[0])
    select = [f"coalesce(a.{_q(k)}, b.{_q(k)}) AS k{i}" for i, k in enumerate(plan.keys)]
    select += [f"a.{k0} IS NOT NULL AS in_a", f"b.{k0} IS NOT NULL AS in_b"]
    flags = []
    for j, column in enumerate(plan.compared):
        col = _q(column.name)
        flag = plan.distinct(j, f"a.{col}", f"b.{col}")
        flags.append(flag)
        select += [f"a.{col} AS a{j}", f"b.{col} AS b{j}", f"{flag} AS d{j}"]
    where = " OR ".join([f"a.{k0} IS NULL", f"b.{k0} IS NULL", *flags])
    _run(
        con,
        f"CREATE TEMP TABLE {table} AS SELECT {', '.join(select)} "
        f"FROM {a_src} AS a FULL OUTER JOIN {b_src} AS b ON {plan.key_match('a', 'b')} WHERE {where}",
        "compare the rows",
    )


def _classified(plan: _Plan, table: str) -> str:
    """The diff table with per-column mismatch flags (m<j>, tolerance applied) and the row class."""
    mism = [f"(in_a AND in_b AND {plan.mismatch(j, f'a{j}', f'b{j}')}) AS m{j}" for j in range(len(plan.compared))]
    any_m = " OR ".join(f"{plan.mismatch(j, f'a{j}', f'b{j}')}" for j in range(len(plan.compared))) or "false"
    row_class = (
        "CASE WHEN NOT in_b THEN 'only_in_a' WHEN NOT in_a THEN 'only_in_b' "
        f"WHEN {any_m} THEN 'changed' ELSE 'identical' END AS class"
    )
    return f"(SELECT *, {', '.join([*mism, row_class])} FROM {table})"


def _row_counts(con: duckdb.DuckDBPyConnection, classified: str) -> dict[str, int]:
    row = con.execute(
        "SELECT " + ", ".join(f"count(*) FILTER (WHERE class = '{c}')" for c in ROW_CLASSES[:3]) + f" FROM {classified}"
    ).fetchone()
    assert row is not None
    return dict(zip(ROW_CLASSES[:3], (int(v) for v in row), strict=True))


def _column_stats(con: duckdb.DuckDBPyConnection, plan: _Plan, classified: str, common: int) -> list[ColumnStats]:
    if not plan.compared:
        return []
    parts = []
    numeric = [j for j, c in enumerate(plan.compared) if plan.numeric(c)]
    for j in range(len(plan.compared)):
        parts += [
            f"count(*) FILTER (WHERE m{j})",
            f"count(*) FILTER (WHERE m{j} AND ((a{j} IS NULL) <> (b{j} IS NULL)))",
            f"count(*) FILTER (WHERE in_a AND in_b AND d{j} AND NOT m{j})",
        ]
    for j in numeric:
        delta = plan.delta(j, f"a{j}", f"b{j}")
        only = f"FILTER (WHERE m{j} AND a{j} IS NOT NULL AND b{j} IS NOT NULL)"
        parts += [
            f"count(*) {only}",
            f"min({delta}) {only}",
            f"quantile_disc({delta}, [0.5, 0.95]) {only}",
            f"max({delta}) {only}",
            f"sum({delta}) {only}",
        ]
    row = con.execute(f"SELECT {', '.join(parts)} FROM {classified}").fetchone()
    assert row is not None
    values = iter(row)
    base = [(int(next(values)), int(next(values)), int(next(values))) for _ in plan.compared]
    deltas: dict[int, DeltaStats] = {}
    for j in numeric:
        n, lo, quantiles, hi, total = (next(values) for _ in range(5))
        if n:
            edges, counts = _histogram(con, plan, classified, j, float(lo), float(hi))
            deltas[j] = DeltaStats(
                int(n), float(lo), float(quantiles[0]), float(quantiles[1]), float(hi), float(total), edges, counts
            )
    stats = []
    for j, column in enumerate(plan.compared):
        mismatches, null_one_side, tolerated = base[j]
        stats.append(
            ColumnStats(
                name=column.name,
                a_type=column.a_type,
                b_type=column.b_type,
                compared_rows=common,
                matches=common - mismatches,
                mismatches=mismatches,
                null_on_one_side=null_one_side,
                tolerated=tolerated,
                tolerance=plan.tolerances.get(column.name),
                delta=deltas.get(j),
            )
        )
    return stats


def _histogram(
    con: duckdb.DuckDBPyConnection, plan: _Plan, classified: str, j: int, lo: float, hi: float
) -> tuple[list[float], list[int]]:
    """Equal-width bins of B−A between its min and max (one bin when they are equal)."""
    bins = HISTOGRAM_BINS if hi > lo else 1
    width = (hi - lo) / bins if hi > lo else 1.0
    delta = plan.delta(j, f"a{j}", f"b{j}")
    rows = con.execute(
        f"SELECT least(floor(({delta}::DOUBLE - {lo!r}) / {width!r})::BIGINT, {bins - 1}) AS bin, count(*) "
        f"FROM {classified} WHERE m{j} AND a{j} IS NOT NULL AND b{j} IS NOT NULL GROUP BY bin"
    ).fetchall()
    counts = [0] * bins
    for index, n in rows:
        counts[max(0, int(index))] += int(n)
    edges = [lo + width * i for i in range(bins)] + [hi if hi > lo else lo]
    return edges, counts


def _samples(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    classified: str,
    sample_table: str,
    a_src: str,
    size: int,
) -> dict[str, list[Sample]]:
    """Up to ``size`` keys of each class, in key order; differing classes land in ``sample_table``."""
    order = plan.key_order()
    con.execute(
        f"CREATE TEMP TABLE {sample_table} AS SELECT * FROM {classified} WHERE class <> 'identical' "
        f"QUALIFY row_number() OVER (PARTITION BY class ORDER BY {order}) <= {size}"
    )
    n_keys, n_cols = len(plan.keys), len(plan.compared)
    select = [f"k{i}" for i in range(n_keys)] + ["class"]
    select += [f"m{j}" for j in range(n_cols)]
    select += [f"a{j}::VARCHAR" for j in range(n_cols)] + [f"b{j}::VARCHAR" for j in range(n_cols)]
    rows = con.execute(f"SELECT {', '.join(select)} FROM {sample_table} ORDER BY class, {order}").fetchall()
    names = [c.name for c in plan.compared]
    samples: dict[str, list[Sample]] = {name: [] for name in ROW_CLASSES}
    for row in rows:
        key = {k: _plain(v) for k, v in zip(plan.keys, row[:n_keys], strict=True)}
        row_class = str(row[n_keys])
        flags = row[n_keys + 1 : n_keys + 1 + n_cols]
        a_values = dict(zip(names, row[n_keys + 1 + n_cols : n_keys + 1 + 2 * n_cols], strict=True))
        b_values = dict(zip(names, row[n_keys + 1 + 2 * n_cols :], strict=True))
        if row_class == "changed":
            differing = [name for name, flag in zip(names, flags, strict=True) if flag]
            a_kept = {n: a_values[n] for n in differing}
            b_kept = {n: b_values[n] for n in differing}
            samples["changed"].append(Sample(key, differing, a_kept, b_kept))
        elif row_class == "only_in_a":
            samples["only_in_a"].append(Sample(key, [], a_values, None))
        else:
            samples["only_in_b"].append(Sample(key, [], None, b_values))
    if size:
        # Identical keys are not in the diff table. Among the first size + m keys of A (m = keys of A
        # that are only in A or changed), every key that is neither of those is identical, and at
        # least `size` of them are there: a top-N scan of A's keys instead of another join.
        found = con.execute(
            f"SELECT count(*) FILTER (WHERE class IN ('only_in_a', 'changed')) FROM {classified}"
        ).fetchone()
        excluded = int(found[0]) if found else 0
        key_cols = ", ".join(_q(k) for k in plan.keys)
        not_identical = " AND ".join(f"c.k{i} = a.{_q(k)}" for i, k in enumerate(plan.keys))
        rows = con.execute(
            f"SELECT {key_cols} FROM (SELECT {key_cols} FROM {a_src} ORDER BY {key_cols} LIMIT {size + excluded}) "
            f"AS a WHERE NOT EXISTS (SELECT 1 FROM {classified} AS c WHERE c.class IN ('only_in_a', 'changed') "
            f"AND {not_identical}) ORDER BY {key_cols} LIMIT {size}"
        ).fetchall()
        samples["identical"] = [
            Sample({k: _plain(v) for k, v in zip(plan.keys, r, strict=True)}, [], None, None) for r in rows
        ]
    return samples


def _trail_predicate(plan: _Plan, spec: TrailSpec) -> str:
    """The join of events ``e`` to keys ``k``: the spec's, or stream id = the single key column."""
    if spec.predicate is not None:
        return spec.predicate
    if len(plan.keys) != 1:
        raise ComparisonError(
            f"the default trail joins e.stream_id to the single key column, but the keys are {plan.keys}: "
            "give TrailSpec(predicate=...) over e.<event column> and k.<key column>."
        )
    return f"e.stream_id = k.{_q(plan.keys[0])}::VARCHAR"


def _attach_trails(
    con: duckdb.DuckDBPyConnection,
    plan: _Plan,
    sample_table: str,
    samples: dict[str, list[Sample]],
    spec: TrailSpec,
) -> dict[str, list[Sample]]:
    """One query finds the events of every sampled differing key."""
    predicate = _trail_predicate(plan, spec)
    events = _relation_sql(spec.events)
    key_names = ", ".join(f"k{i} AS {_q(k)}" for i, k in enumerate(plan.keys))
    key_cols = ", ".join(f"k.{_q(k)}" for k in plan.keys)
    sql = f"""
        SELECT {key_cols},
               list(DISTINCT e.stream_id ORDER BY e.stream_id) FILTER (WHERE e.stream_id IS NOT NULL),
               count(e.global_position), min(e.global_position), max(e.global_position),
               histogram(e.event_type) FILTER (WHERE e.event_type IS NOT NULL)
        FROM (SELECT DISTINCT {key_names} FROM {sample_table}) AS k
        LEFT JOIN {events} AS e ON {predicate}
        GROUP BY ALL
    """
    try:
        rows = con.execute(sql).fetchall()
    except duckdb.Error as error:
        if not _is_missing(error):
            raise ComparisonError(f"the trail predicate {predicate!r} failed: {first_line(error)}") from error
        raise ComparisonError(
            f"the trail's events relation {spec.events!r} does not exist (is the lake attached?), or its predicate "
            f"names an unknown column: {first_line(error)}"
        ) from error
    n = len(plan.keys)
    trails = {}
    for row in rows:
        streams, count, first, last, types = row[n:]
        trails[tuple(_plain(v) for v in row[:n])] = Trail(
            streams=[str(s) for s in streams or []],
            events=int(count),
            first_position=None if first is None else int(first),
            last_position=None if last is None else int(last),
            event_types={str(t): int(c) for t, c in sorted((types or {}).items())},
        )
    result: dict[str, list[Sample]] = {}
    for name, items in samples.items():
        result[name] = [
            Sample(s.key, s.columns, s.a, s.b, trails.get(tuple(s.key[k] for k in plan.keys)))
            if name != "identical"
            else s
            for s in items
        ]
    return result


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


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
    con.execute("BEGIN TRANSACTION")
    try:
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
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return comparison_id


# ---------------------------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllowedChange:
    """``columns`` may differ, but only on rows where ``where`` (SQL over a.<col> / b.<col>) holds."""

    columns: list[str]
    where: str = "true"


@dataclass(frozen=True)
class Expectation:
    """What a new version is allowed to change; anything else is a violation."""

    changes: list[AllowedChange] = field(default_factory=list)
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
    with _sql_names_only(con):
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

    plan = _Plan.build(con, comparison.a, comparison.b, comparison.keys, comparison.tolerances)
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
        col = _q(column.name)
        mismatch = plan.mismatch(j, f"a.{col}", f"b.{col}")
        allowed = [f"({rule.where})" for rule in expectation.changes if column.name in rule.columns]
        flag = mismatch if not allowed else f"({mismatch} AND NOT coalesce({' OR '.join(allowed)}, false))"
        violation_flags.append(flag)
    by_column: dict[str, int] = {}
    violating_rows = 0
    if violation_flags:
        reports = {
            "a": _key_report(con, plan.a_sql, plan.keys, 0),
            "b": _key_report(con, plan.b_sql, plan.keys, 0),
        }
        a_src = _source(plan.a_sql, plan.keys, reports["a"], comparison.duplicate_keys)
        b_src = _source(plan.b_sql, plan.keys, reports["b"], comparison.duplicate_keys)
        any_violation = " OR ".join(violation_flags)
        key_struct = "struct_pack(" + ", ".join(f"{_q(k)} := a.{_q(k)}" for k in plan.keys) + ")"
        size = max(comparison.sample_size, 1)
        sql = (
            "SELECT count(*) FILTER (WHERE "
            + any_violation
            + "), "
            + ", ".join(f"count(*) FILTER (WHERE {flag})" for flag in violation_flags)
            + f", min({key_struct}, {size}) FILTER (WHERE {any_violation}) "
            f"FROM {a_src} AS a JOIN {b_src} AS b ON {plan.key_match('a', 'b')}"
        )
        row = _run(con, sql, "check the expectation (is every `where` valid SQL over a.<col> and b.<col>?)")
        assert row is not None
        violating_rows = int(row[0])
        by_column = {c.name: int(n) for c, n in zip(plan.compared, row[1 : 1 + len(plan.compared)], strict=True) if n}
        if violating_rows:
            detail = ", ".join(f"{name}: {n}" for name, n in by_column.items())
            problems.append(f"{violating_rows} changed row(s) differ outside the declared changes ({detail})")
            violating_keys += [{k: _plain(v) for k, v in item.items()} for item in row[-1] or []]
    return ExpectationResult(not problems, problems, violating_rows, by_column, violating_keys)


# ---------------------------------------------------------------------------------------------
# JSON form and helpers
# ---------------------------------------------------------------------------------------------


def _to_dict(c: Comparison) -> dict[str, Any]:
    def sample(s: Sample) -> dict[str, Any]:
        trail = None
        if s.trail is not None:
            t = s.trail
            trail = {
                "streams": t.streams,
                "events": t.events,
                "first_position": t.first_position,
                "last_position": t.last_position,
                "event_types": t.event_types,
            }
        return {"key": s.key, "columns": s.columns, "a": s.a, "b": s.b, "trail": trail}

    def key_report(r: KeyReport) -> dict[str, Any]:
        return {
            "rows": r.rows,
            "distinct_keys": r.distinct_keys,
            "null_key_rows": r.null_key_rows,
            "duplicate_keys": r.duplicate_keys,
            "duplicate_rows": r.duplicate_rows,
            "rows_set_aside": r.rows_set_aside,
            "null_key_sample": r.null_key_sample,
            "duplicate_sample": [{"key": d.key, "rows": d.rows} for d in r.duplicate_sample],
        }

    def column(s: ColumnStats) -> dict[str, Any]:
        delta = None
        if s.delta is not None:
            d = s.delta
            delta = {
                "count": d.count,
                "min": d.min,
                "p50": d.p50,
                "p95": d.p95,
                "max": d.max,
                "sum": d.sum,
                "histogram": {"edges": d.histogram_edges, "counts": d.histogram_counts},
            }
        return {
            "name": s.name,
            "a_type": s.a_type,
            "b_type": s.b_type,
            "compared_rows": s.compared_rows,
            "matches": s.matches,
            "mismatches": s.mismatches,
            "null_on_one_side": s.null_on_one_side,
            "tolerated": s.tolerated,
            "tolerance": s.tolerance,
            "match_percent": s.match_percent,
            "delta": delta,
        }

    return {
        "schema_version": SCHEMA_VERSION,
        "a": c.a,
        "b": c.b,
        "keys": c.keys,
        "compared_at": c.compared_at,
        "options": {
            "tolerances": c.tolerances,
            "sample_size": c.sample_size,
            "duplicate_keys": c.duplicate_keys,
            "trail_events": c.trail_events,
        },
        "schema": {
            "added": [{"name": x.name, "type": x.type} for x in c.schema.added],
            "removed": [{"name": x.name, "type": x.type} for x in c.schema.removed],
            "type_changed": [{"name": x.name, "a_type": x.a_type, "b_type": x.b_type} for x in c.schema.type_changed],
            "common": [{"name": x.name, "type": x.type} for x in c.schema.common],
        },
        "key_reports": {side: key_report(r) for side, r in c.key_reports.items()},
        "rows": {
            "total": c.total_keys,
            **{name: {"count": r.count, "percent": r.percent} for name, r in c.rows.items()},
        },
        "columns": [column(s) for s in c.columns],
        "samples": {name: [sample(s) for s in items] for name, items in c.samples.items()},
    }


def _from_dict(d: dict[str, Any]) -> Comparison:
    if d.get("schema_version") != SCHEMA_VERSION:
        raise ComparisonError(
            f"comparison report has schema_version {d.get('schema_version')!r}; this version reads {SCHEMA_VERSION}."
        )

    def sample(s: dict[str, Any]) -> Sample:
        t = s["trail"]
        trail = None if t is None else Trail(**t)
        return Sample(s["key"], s["columns"], s["a"], s["b"], trail)

    def column(s: dict[str, Any]) -> ColumnStats:
        delta = None
        if s["delta"] is not None:
            x = s["delta"]
            delta = DeltaStats(
                x["count"],
                x["min"],
                x["p50"],
                x["p95"],
                x["max"],
                x["sum"],
                x["histogram"]["edges"],
                x["histogram"]["counts"],
            )
        fields = {k: v for k, v in s.items() if k not in ("delta", "match_percent")}
        return ColumnStats(**fields, delta=delta)

    def key_report(r: dict[str, Any]) -> KeyReport:
        return KeyReport(
            r["rows"],
            r["distinct_keys"],
            r["null_key_rows"],
            r["duplicate_keys"],
            r["duplicate_rows"],
            r["null_key_sample"],
            [DuplicateKey(x["key"], x["rows"]) for x in r["duplicate_sample"]],
        )

    schema = d["schema"]
    options = d["options"]
    return Comparison(
        a=d["a"],
        b=d["b"],
        keys=d["keys"],
        compared_at=d["compared_at"],
        tolerances=options["tolerances"],
        sample_size=options["sample_size"],
        duplicate_keys=options["duplicate_keys"],
        trail_events=options["trail_events"],
        schema=SchemaDiff(
            added=[ColumnType(**x) for x in schema["added"]],
            removed=[ColumnType(**x) for x in schema["removed"]],
            type_changed=[TypeChange(**x) for x in schema["type_changed"]],
            common=[ColumnType(**x) for x in schema["common"]],
        ),
        key_reports={side: key_report(r) for side, r in d["key_reports"].items()},
        rows={name: RowClass(d["rows"][name]["count"], d["rows"][name]["percent"]) for name in ROW_CLASSES},
        columns=[column(s) for s in d["columns"]],
        samples={name: [sample(s) for s in d["samples"][name]] for name in ROW_CLASSES},
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(name: str) -> str:
    parts = name.split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts) or len(parts) > 2:
        raise ComparisonError(f"schema {name!r} must be a name or catalog.name of letters, digits and underscores.")
    return ".".join(_q(p) for p in parts)


def _is_numeric(type_name: str) -> bool:
    return bool(_NUMERIC.match(type_name))


def _percent(part: int, whole: int, empty: float = 0.0) -> float:
    return round(100.0 * part / whole, 4) if whole else empty


def _plain(value: Any) -> Any:
    """A key value as JSON can hold it: str/int/float/bool/None as they are, anything else as text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_missing(error: duckdb.Error) -> bool:
    """True when DuckDB failed because a catalog, schema, table or column does not exist."""
    return isinstance(error, duckdb.CatalogException) or "does not exist" in str(error)


def _run(con: duckdb.DuckDBPyConnection, sql: str, what: str) -> tuple[Any, ...] | None:
    try:
        return con.execute(sql).fetchone()
    except duckdb.Error as error:
        raise ComparisonError(f"could not {what}: {first_line(error)}") from error


@contextmanager
def _sql_names_only(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Switch off DuckDB's Python replacement scans for the duration.

    Otherwise a missing table named like one of our local variables (``events``, ``a``) would be
    "found" in this module's frame instead of failing with a clear error.
    """
    row = con.execute("SELECT current_setting('python_enable_replacements')").fetchone()
    before = bool(row[0]) if row else True
    con.execute("SET python_enable_replacements = false")
    try:
        yield
    finally:
        con.execute(f"SET python_enable_replacements = {'true' if before else 'false'}")


@contextmanager
def _temp_names(con: duckdb.DuckDBPyConnection, n: int) -> Iterator[list[str]]:
    """Unique temporary table names, dropped on the way out."""
    names = [f"temp.main.__projectionist_diff_{uuid.uuid4().hex}" for _ in range(n)]
    try:
        yield names
    finally:
        for name in names:
            con.execute(f"DROP TABLE IF EXISTS {name}")
