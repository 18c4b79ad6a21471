"""Upcasting cost per form: ``defaults=`` beside the SQL rewrite it replaces and a Python function.

The same upcast, ItemAdded v1 → v2 with ``currency`` defaulting to ``EUR`` (the stored currency
kept), written three ways and applied by ``projections.upcasting.upcast_sql`` to ``--events``
ItemAdded v1 payloads in an in-memory DuckDB table: ``defaults={"currency": "EUR"}``, the SQL form
``json_merge_patch('{"currency": "EUR"}', data)`` (what the demo shop used before), and a Python
function (``dict -> dict``, run row by row). Each round writes the upcast events to a temporary
table; rounds are interleaved and the best kept. The script checks that all three give the same
events.

Run: ``uv run python benchmarks/upcast.py [--events 570390] [--threads 2] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from projections import Upcaster, Upcasters
from projections.upcasting import upcast_sql

GENERATE = """
CREATE TABLE events AS SELECT
    i AS global_position, 1000 + i // 20 AS transaction_id, 'cart-' || (i // 3) AS stream_id,
    1 + i % 3 AS stream_version,
    uuid() AS event_id, 'ItemAdded' AS event_type, 1 AS event_version,
    json_object('product_id', 'SKU-' || lpad((i % 997)::VARCHAR, 3, '0'), 'quantity', 1 + i % 3,
        'unit_price', ((i % 5000) / 100)::DECIMAL(18,2))::VARCHAR AS data,
    TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i) AS recorded_at
FROM range({events}) AS t(i)
"""


def add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {"currency": "EUR", **data} if data.get("currency") is None else data


FORMS = {
    "defaults": Upcaster("ItemAdded", 1, defaults={"currency": "EUR"}),
    "sql (json_merge_patch)": Upcaster("ItemAdded", 1, sql="""json_merge_patch('{"currency": "EUR"}', data)"""),
    "python function": Upcaster("ItemAdded", 1, function=add_currency),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=570_390, help="ItemAdded v1 events (the rebuild benchmark's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    con = duckdb.connect(config={"threads": args.threads})
    con.execute(GENERATE.format(events=args.events))
    best: dict[str, float] = {}
    results: dict[str, list[Any]] = {}
    for round_ in range(args.repeat):
        for name, upcaster in FORMS.items():
            if name == "python function" and round_ > 0:
                continue  # row by row: one round is enough to see it
            query = upcast_sql(con, "events", Upcasters([upcaster]))
            started = time.perf_counter()
            con.execute(f"CREATE OR REPLACE TEMP TABLE upcast AS {query}")
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
            if round_ == 0:
                rows = con.sql("SELECT event_version, data FROM upcast ORDER BY global_position").fetchall()
                results[name] = [(v, json.loads(d)) for v, d in rows]
    reference = results["defaults"]
    assert all(rows == reference for rows in results.values()), "the forms disagree"
    assert all(v == 2 and d["currency"] == "EUR" for v, d in reference)
    print(f"{args.events:,} ItemAdded v1 events, DuckDB threads: {args.threads}; best of {args.repeat} (python: one)")
    for name, seconds in best.items():
        print(f"{name:>24}: {seconds:6.3f} s  {args.events / seconds / 1e6:6.2f} M events/s")
    for name, seconds in best.items():
        if name != "defaults":
            print(f"{name} / defaults = {seconds / best['defaults']:.1f}x")


if __name__ == "__main__":
    main()
