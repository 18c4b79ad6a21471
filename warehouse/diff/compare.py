"""The comparison engine: ``compare`` two relations row by row in DuckDB SQL.

``compare(con, a, b, keys)`` matches the rows of two relations by key in DuckDB and returns a
:class:`~warehouse.diff.model.Comparison`: the schema diff, the key health of each side (null and
duplicate keys, checked before any row is compared), the row classes (only in A, only in B,
changed, identical), per-column match counts, the distribution of numeric deltas, a
deterministic sample of each class and, for sampled differing keys, the trail of events that fed
them.

All counting happens in SQL. The one pass over the full data is a FULL OUTER JOIN on the keys
that keeps only the rows that differ somewhere (``IS DISTINCT FROM`` per column) in a temporary
table; with a few percent of differences that table is small, and every statistic, sample and
trail is computed from it. Identical rows are counted, never copied.

Rows whose key holds a NULL cannot be matched: they are counted, sampled and left out.
A relation with duplicate keys is refused by default (:class:`DuplicateKeyError` carries the
counts and samples); with ``duplicate_keys="first"`` the comparison keeps, per key, the row
that sorts first on all its columns, and the report says how many rows were set aside.

:class:`Plan`, :func:`key_report` and :func:`source` are public for the expectation check, which
re-reads the full data with the same keys, tolerances and duplicate policy.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb

from eventstore.failures import first_line
from eventstore.quoting import quote_literal
from warehouse.diff.model import (
    ROW_CLASSES,
    ColumnStats,
    ColumnType,
    Comparison,
    DeltaStats,
    DuplicateKey,
    DuplicateKeyError,
    DuplicatePolicy,
    KeyReport,
    RowClass,
    Sample,
    SchemaDiff,
    Trail,
    TypeChange,
    percent,
)
from warehouse.diff.sql import plain, quote_identifier, run, sql_names_only
from warehouse.errors import ComparisonError

__all__ = ["Plan", "TrailSpec", "compare", "key_report", "source"]

HISTOGRAM_BINS = 20

_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL.*)$"
)
_INTEGER = re.compile(r"^U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)$")
_QUERY = re.compile(r"^\s*(\(|select\b|with\b|from\b|values\b|table\b|pivot\b|unpivot\b)", re.IGNORECASE)


@dataclass(frozen=True)
class TrailSpec:
    """Where the events of a key are: an events relation and a join predicate.

    ``predicate`` is SQL over ``e`` (a row of ``events``) and ``k`` (a key, with the key
    columns under their own names). The default, for a single key column, is
    ``e.stream_id = k.<key>``: the key is the stream id, as for ``cart_summary.cart_id``.
    """

    events: str = "lake.raw.all_events"
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
    with sql_names_only(con):
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
    plan = Plan.build(con, a, b, keys, tolerances)
    if trail is not None:
        _trail_predicate(plan, trail)  # a bad trail spec fails before the full pass, not after
    key_reports = {
        "a": key_report(con, plan.a_sql, keys, sample_size),
        "b": key_report(con, plan.b_sql, keys, sample_size),
    }
    _check_duplicates(a, b, key_reports, duplicate_keys)
    a_src = source(plan.a_sql, keys, key_reports["a"], duplicate_keys)
    b_src = source(plan.b_sql, keys, key_reports["b"], duplicate_keys)
    with _temp_names(con, 3) as (diff_table, classified, sample_table):
        _create_diff_table(con, diff_table, plan, a_src, b_src)
        con.execute(f"CREATE TEMP TABLE {classified} AS SELECT * FROM {_classified(plan, diff_table)}")
        n_a = key_reports["a"].distinct_keys
        counts = _row_counts(con, classified)
        common = n_a - counts["only_in_a"]
        counts["identical"] = common - counts["changed"]
        total = n_a + counts["only_in_b"]
        rows = {name: RowClass(counts[name], percent(counts[name], total)) for name in ROW_CLASSES}
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
class Plan:
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
    ) -> Plan:
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
        return " AND ".join(f"{left}.{quote_identifier(k)} = {right}.{quote_identifier(k)}" for k in self.keys)

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


def key_report(con: duckdb.DuckDBPyConnection, sql: str, keys: list[str], sample_size: int) -> KeyReport:
    key_list = ", ".join(quote_identifier(k) for k in keys)
    any_null = " OR ".join(f"{quote_identifier(k)} IS NULL" for k in keys)
    key_struct = "struct_pack(" + ", ".join(f"{quote_identifier(k)} := {quote_identifier(k)}" for k in keys) + ")"
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
        DuplicateKey({k: plain(v) for k, v in item["k"].items()}, int(item["n"])) for item in dup_sample or []
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


def source(sql: str, keys: list[str], report: KeyReport, policy: DuplicatePolicy) -> str:
    """The rows that take part: null keys left out; with policy 'first', one row per key."""
    where = ""
    if report.null_key_rows:
        where = " WHERE " + " AND ".join(f"{quote_identifier(k)} IS NOT NULL" for k in keys)
    if report.duplicate_keys and policy == "first":
        # Ordering by the whole row (as a struct) makes "first" deterministic whatever the columns.
        return (
            f"(SELECT * FROM {sql} AS r{where} QUALIFY row_number() OVER "
            f"(PARTITION BY {', '.join(quote_identifier(k) for k in keys)} ORDER BY r) = 1)"
        )
    if where:
        return f"(SELECT * FROM {sql}{where})"
    return sql


def _create_diff_table(con: duckdb.DuckDBPyConnection, table: str, plan: Plan, a_src: str, b_src: str) -> None:
    """The single full pass: keep every key present on one side only or differing in some column."""
    k0 = quote_identifier(plan.keys[0])
    select = [f"coalesce(a.{quote_identifier(k)}, b.{quote_identifier(k)}) AS k{i}" for i, k in enumerate(plan.keys)]
    select += [f"a.{k0} IS NOT NULL AS in_a", f"b.{k0} IS NOT NULL AS in_b"]
    flags = []
    for j, column in enumerate(plan.compared):
        col = quote_identifier(column.name)
        flag = plan.distinct(j, f"a.{col}", f"b.{col}")
        flags.append(flag)
        select += [f"a.{col} AS a{j}", f"b.{col} AS b{j}", f"{flag} AS d{j}"]
    where = " OR ".join([f"a.{k0} IS NULL", f"b.{k0} IS NULL", *flags])
    run(
        con,
        f"CREATE TEMP TABLE {table} AS SELECT {', '.join(select)} "
        f"FROM {a_src} AS a FULL OUTER JOIN {b_src} AS b ON {plan.key_match('a', 'b')} WHERE {where}",
        "compare the rows",
    )


def _classified(plan: Plan, table: str) -> str:
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
        "SELECT "
        + ", ".join(f"count(*) FILTER (WHERE class = {quote_literal(c)})" for c in ROW_CLASSES[:3])
        + f" FROM {classified}"
    ).fetchone()
    assert row is not None
    return dict(zip(ROW_CLASSES[:3], (int(v) for v in row), strict=True))


def _column_stats(con: duckdb.DuckDBPyConnection, plan: Plan, classified: str, common: int) -> list[ColumnStats]:
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
    con: duckdb.DuckDBPyConnection, plan: Plan, classified: str, j: int, lo: float, hi: float
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
    plan: Plan,
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
        key = {k: plain(v) for k, v in zip(plan.keys, row[:n_keys], strict=True)}
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
        key_cols = ", ".join(quote_identifier(k) for k in plan.keys)
        not_identical = " AND ".join(f"c.k{i} = a.{quote_identifier(k)}" for i, k in enumerate(plan.keys))
        rows = con.execute(
            f"SELECT {key_cols} FROM (SELECT {key_cols} FROM {a_src} ORDER BY {key_cols} LIMIT {size + excluded}) "
            f"AS a WHERE NOT EXISTS (SELECT 1 FROM {classified} AS c WHERE c.class IN ('only_in_a', 'changed') "
            f"AND {not_identical}) ORDER BY {key_cols} LIMIT {size}"
        ).fetchall()
        samples["identical"] = [
            Sample({k: plain(v) for k, v in zip(plan.keys, r, strict=True)}, [], None, None) for r in rows
        ]
    return samples


def _trail_predicate(plan: Plan, spec: TrailSpec) -> str:
    """The join of events ``e`` to keys ``k``: the spec's, or stream id = the single key column."""
    if spec.predicate is not None:
        return spec.predicate
    if len(plan.keys) != 1:
        raise ComparisonError(
            f"the default trail joins e.stream_id to the single key column, but the keys are {plan.keys}: "
            "give TrailSpec(predicate=...) over e.<event column> and k.<key column>."
        )
    return f"e.stream_id = k.{quote_identifier(plan.keys[0])}::VARCHAR"


def _attach_trails(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    sample_table: str,
    samples: dict[str, list[Sample]],
    spec: TrailSpec,
) -> dict[str, list[Sample]]:
    """One query finds the events of every sampled differing key."""
    predicate = _trail_predicate(plan, spec)
    events = _relation_sql(spec.events)
    key_names = ", ".join(f"k{i} AS {quote_identifier(k)}" for i, k in enumerate(plan.keys))
    key_cols = ", ".join(f"k.{quote_identifier(k)}" for k in plan.keys)
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
        trails[tuple(plain(v) for v in row[:n])] = Trail(
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


def _is_numeric(type_name: str) -> bool:
    return bool(_NUMERIC.match(type_name))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_missing(error: duckdb.Error) -> bool:
    """True when DuckDB failed because a catalog, schema, table or column does not exist."""
    return isinstance(error, duckdb.CatalogException) or "does not exist" in str(error)


@contextmanager
def _temp_names(con: duckdb.DuckDBPyConnection, n: int) -> Iterator[list[str]]:
    """Unique temporary table names, dropped on the way out."""
    names = [f"temp.main.__projectionist_diff_{uuid.uuid4().hex}" for _ in range(n)]
    try:
        yield names
    finally:
        for name in names:
            con.execute(f"DROP TABLE IF EXISTS {name}")
