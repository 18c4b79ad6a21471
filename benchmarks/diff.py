"""Benchmark: `warehouse.diff.compare` beside SQLMesh's table diff and datacompy, on the same data.

Two versions of a cart_summary-like projection (1 M rows by default) differ by a few percent:
1 % of carts only in A, 1 % only in B, 3 % changed (status, total_amount, item_quantity). Every
tool compares the same two DuckDB tables on `cart_id`, in one DuckDB connection limited to
2 threads:

- ours: `compare(con, "v1", "v2", ["cart_id"])`: schema diff, key checks, row classes,
  per-column stats, numeric deltas, samples;
- SQLMesh: `TableDiff(DuckDBEngineAdapter, "v1", "v2", on=["cart_id"])`, `schema_diff()` and
  `row_diff()` (the same work: counts per class, per-column match stats, samples);
- datacompy: `PolarsCompare` and `PandasCompare` on data frames already in memory (the time to
  fetch them from DuckDB is shown apart and not counted), plus `.report()`.

Run: `uv run --group bench python benchmarks/diff.py [--rows 1000000] [--repeat 3] [--no-pandas]`
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import duckdb

from warehouse.diff import compare


def build(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """v1 and v2 of a cart summary; v2 drops 1 %, adds 1 % and changes 3 % of the carts."""
    con.execute(
        f"""
        CREATE TABLE v1 AS
        SELECT printf('cart-%08d', i) AS cart_id,
               printf('customer-%06d', hash(i) % 200000) AS customer_id,
               (['open', 'checked_out', 'abandoned'])[1 + (hash(i * 7) % 3)::INTEGER] AS status,
               (1 + hash(i * 3) % 9)::INTEGER AS item_quantity,
               ((hash(i * 5) % 100000) / 100)::DECIMAL(18, 2) AS total_amount,
               (['EUR', 'USD', 'GBP'])[1 + (hash(i * 11) % 3)::INTEGER] AS currency,
               TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i * 17) AS opened_at,
               TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i * 17 + 600) AS updated_at,
               (i * 4)::BIGINT AS last_global_position
        FROM range({rows}) t(i)
        """
    )
    con.execute(
        f"""
        CREATE TABLE v2 AS
        SELECT * REPLACE (
                   CASE WHEN i % 100 = 1 THEN 'checked_out' ELSE status END AS status,
                   CASE WHEN i % 100 = 2 THEN total_amount + 1.25 ELSE total_amount END AS total_amount,
                   CASE WHEN i % 100 = 3 THEN item_quantity + 1 ELSE item_quantity END AS item_quantity)
        FROM (SELECT *, row_number() OVER () - 1 AS i FROM v1)
        WHERE i % 100 <> 0
        UNION ALL
        SELECT printf('cart-%08d', {rows} + i), 'customer-new', 'open', 1, 9.99, 'EUR',
               TIMESTAMPTZ '2026-06-01 00:00:00+00', TIMESTAMPTZ '2026-06-01 00:00:00+00', 0, NULL
        FROM range({rows // 100}) t(i)
        """
    )
    con.execute("ALTER TABLE v2 DROP COLUMN i")


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-pandas", action="store_true", help="skip datacompy's pandas compare (the slowest)")
    args = parser.parse_args()

    con = duckdb.connect(config={"threads": 2})
    started = time.perf_counter()
    build(con, args.rows)
    print(f"built v1/v2 with {args.rows:,} rows in {time.perf_counter() - started:.1f} s (threads=2)")

    ours, comparison = best_of(args.repeat, lambda: compare(con, "v1", "v2", ["cart_id"]))
    print(f"ours       compare()                    {ours:7.2f} s   {comparison.counts()}")
    results = {"ours": ours}

    from sqlmesh.core.engine_adapter.duckdb import DuckDBEngineAdapter
    from sqlmesh.core.table_diff import TableDiff

    adapter = DuckDBEngineAdapter(lambda: con)

    def sqlmesh_diff() -> Any:
        diff = TableDiff(adapter=adapter, source="v1", target="v2", on=["cart_id"], limit=5)
        diff.schema_diff()
        return diff.row_diff()

    peer, row_diff = best_of(args.repeat, sqlmesh_diff)
    print(
        f"SQLMesh    TableDiff.row_diff()         {peer:7.2f} s   only_in_a={row_diff.s_only_count} "
        f"only_in_b={row_diff.t_only_count} identical={row_diff.full_match_count} "
        f"changed={row_diff.partial_match_count}"
    )
    results["SQLMesh"] = peer

    import datacompy
    import polars as pl

    started = time.perf_counter()
    p1, p2 = pl.from_arrow(con.sql("FROM v1").arrow()), pl.from_arrow(con.sql("FROM v2").arrow())
    print(f"(fetching both tables into polars: {time.perf_counter() - started:.2f} s, not counted)")
    assert isinstance(p1, pl.DataFrame) and isinstance(p2, pl.DataFrame)

    def polars_compare() -> Any:
        compared = datacompy.PolarsCompare(p1, p2, join_columns=["cart_id"])
        compared.report(sample_count=5)
        return compared

    peer, compared = best_of(args.repeat, polars_compare)
    print(
        f"datacompy  PolarsCompare + report()     {peer:7.2f} s   only_in_a={len(compared.df1_unq_rows)} "
        f"only_in_b={len(compared.df2_unq_rows)} matching={compared.count_matching_rows()}"
    )
    results["datacompy (polars)"] = peer

    if not args.no_pandas:
        d1, d2 = p1.to_pandas(), p2.to_pandas()

        def pandas_compare() -> Any:
            compared = datacompy.PandasCompare(d1, d2, join_columns=["cart_id"])
            compared.report(sample_count=5)
            return compared

        peer, compared = best_of(1, pandas_compare)
        print(f"datacompy  PandasCompare + report()     {peer:7.2f} s   (one run)")
        results["datacompy (pandas)"] = peer

    print()
    for name, seconds in results.items():
        if name != "ours":
            print(f"{name:<20} / ours = {seconds / ours:6.1f}x")


if __name__ == "__main__":
    main()
