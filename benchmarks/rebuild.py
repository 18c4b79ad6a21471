"""Rebuild throughput: cart_summary over millions of events, per body kind, beside a naive per-event loop.

The events are generated straight into a DuckDB table shaped like raw.events by one vectorized
SQL statement (the Python demo generator would take minutes for millions of events): carts of
five events (CartOpened, ItemAdded ×2, ItemRemoved or ItemAdded, CartConfirmed / CartCancelled /
ItemAdded), ItemAdded v1 for the first half of the carts and v2 (EUR or USD) after, positions
interleaved across carts and grouped into transactions of 20 events.

Measured, all in the same run and over the same table:

- ``sql``: the bundled ``cart_summary`` v1 (an Sql body), through ``projections.compute`` (upcast,
  poison validation, body, cast to the declared types);
- ``polars`` and ``fold``: benchmark-only bodies that compute exactly the same rows (checked
  here) as Polars and Fold projections, through the same ``compute``;
- ``naive``: a plain per-event Python loop over the same events (read in batches from DuckDB,
  ``json.loads`` each payload, update a dict per cart): the hand-written projector.

Run: ``uv run python benchmarks/rebuild.py [--events 2000000] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from decimal import Decimal
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from eventstore.duck import new_connection
from projections import Event, Fold, Polars, Projection, compute, discover

PRICES = [
    "4.99", "12.50", "19.90", "7.25", "99.00", "3.10", "45.00", "8.80", "15.75", "0.99",
    "250.00", "33.33", "61.20", "5.55", "18.00", "72.40", "9.95", "120.00", "2.50", "27.30",
]  # fmt: skip

GENERATE = """
CREATE OR REPLACE TABLE events AS
WITH carts AS (
    SELECT i AS cart, hash(i) AS h, i >= {carts} / 2 AS v2,
        CASE WHEN i >= {carts} / 2 AND hash(i, 7) % 5 = 0 THEN 'USD' ELSE 'EUR' END AS currency
    FROM range({carts}) AS t(i)
),
steps AS (
    SELECT c.*, s.k AS step,
        CASE
            WHEN s.k = 0 THEN 'CartOpened'
            WHEN s.k IN (1, 2) THEN 'ItemAdded'
            WHEN s.k = 3 THEN CASE WHEN c.h % 10 < 3 THEN 'ItemRemoved' ELSE 'ItemAdded' END
            ELSE CASE WHEN c.h % 20 < 12 THEN 'CartConfirmed' WHEN c.h % 20 < 17 THEN 'CartCancelled'
                ELSE 'ItemAdded' END
        END AS event_type,
        -- ItemRemoved takes back one unit of the first product.
        CAST(CASE WHEN s.k = 3 AND c.h % 10 < 3 THEN (c.h >> 8) % 20 ELSE (c.h >> (8 + 5 * s.k)) % 20 END
            AS INTEGER) AS product,
        CAST(CASE WHEN s.k = 3 AND c.h % 10 < 3 THEN 1 ELSE 1 + (c.h >> (40 + s.k)) % 3 END AS INTEGER) AS quantity
    FROM carts AS c, range(5) AS s(k)
),
payloads AS (
    SELECT *,
        CASE event_type
            WHEN 'CartOpened' THEN json_object('customer_id', 'customer-' || (h % 100000))
            WHEN 'ItemAdded' THEN CASE WHEN v2
                THEN json_object('product_id', 'SKU-' || lpad((product + 1)::VARCHAR, 3, '0'), 'quantity', quantity,
                    'unit_price', ({prices})[product + 1]::DECIMAL(18,2), 'currency', currency)
                ELSE json_object('product_id', 'SKU-' || lpad((product + 1)::VARCHAR, 3, '0'), 'quantity', quantity,
                    'unit_price', ({prices})[product + 1]::DECIMAL(18,2)) END
            WHEN 'ItemRemoved' THEN json_object('product_id', 'SKU-' || lpad((product + 1)::VARCHAR, 3, '0'),
                'quantity', quantity, 'unit_price', ({prices})[product + 1]::DECIMAL(18,2))
            WHEN 'CartCancelled' THEN json_object('reason', 'changed_mind')
            ELSE json_object()
        END AS payload,
        -- Carts overlap in time: a block of 1000 carts advances one step at a time.
        row_number() OVER (ORDER BY cart // 1000, step, cart) AS position
    FROM steps
)
SELECT
    position AS global_position,
    1000 + position // 20 AS transaction_id,
    'cart-' || cart AS stream_id,
    'cart' AS stream_type,
    step + 1 AS stream_version,
    uuid()::VARCHAR AS event_id,
    event_type,
    CAST(CASE WHEN event_type = 'ItemAdded' AND v2 THEN 2 ELSE 1 END AS INTEGER) AS event_version,
    payload AS data,
    json_object('correlation_id', 'c-' || cart) AS metadata,
    'c-' || cart AS correlation_id,
    NULL::VARCHAR AS causation_id,
    TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(position) AS recorded_at,
    TIMESTAMPTZ '2026-06-01 00:00:00+00' AS ingested_at,
    'native' AS source,
    false AS is_archived,
    NULL::VARCHAR AS tenant_id
FROM payloads
ORDER BY transaction_id, global_position
"""

ENDINGS = {"CartConfirmed": "confirmed", "CartCancelled": "cancelled"}


def polars_cart_summary(events: pl.LazyFrame) -> pl.LazyFrame:
    """cart_summary v1 as a Polars body."""
    kind = pl.col("event_type")
    sign = pl.when(kind == "ItemAdded").then(1).when(kind == "ItemRemoved").then(-1)
    # One parse per event for every field read; the price is decoded as its JSON text, so it reaches
    # Decimal exactly (never through a float).
    fields = pl.col("data").str.json_decode(
        pl.Struct({"customer_id": pl.String, "quantity": pl.Int64, "unit_price": pl.String})
    )
    quantity = pl.col("f").struct.field("quantity")
    price = pl.col("f").struct.field("unit_price").cast(pl.Decimal(18, 2))
    opened = kind == "CartOpened"
    ending = kind.is_in(list(ENDINGS))
    last_ending = kind.filter(ending).sort_by(pl.col("stream_version").filter(ending)).last()
    return (
        events.with_columns(fields.alias("f"))
        .with_columns(
            (sign * quantity).alias("net"),
            ((sign * quantity).cast(pl.Decimal(18, 0)) * price).alias("amount"),
        )
        .group_by("stream_id")
        .agg(
            pl.col("f").struct.field("customer_id").filter(opened).first().alias("customer_id"),
            pl.when(last_ending == "CartConfirmed")
            .then(pl.lit("confirmed"))
            .when(last_ending == "CartCancelled")
            .then(pl.lit("cancelled"))
            .otherwise(pl.lit("open"))
            .alias("status"),
            pl.col("net").sum().alias("item_quantity"),
            pl.col("amount").sum().alias("total_amount"),
            pl.col("recorded_at").filter(opened).first().alias("opened_at"),
            pl.col("recorded_at").sort_by("stream_version").last().alias("last_event_at"),
            pl.col("global_position").sort_by("stream_version").last().alias("last_global_position"),
        )
        .rename({"stream_id": "cart_id"})
    )


def _initial() -> dict[str, Any]:
    return {"customer_id": None, "status": "open", "item_quantity": 0, "total_amount": Decimal(0), "opened_at": None}


def _evolve(cart: dict[str, Any], event: Event) -> dict[str, Any]:
    kind = event.event_type
    if kind == "ItemAdded" or kind == "ItemRemoved":
        data = event.data
        quantity = int(data["quantity"]) if kind == "ItemAdded" else -int(data["quantity"])
        cart["item_quantity"] += quantity
        cart["total_amount"] += quantity * Decimal(data["unit_price"])
    elif kind == "CartOpened":
        cart["customer_id"] = event.data["customer_id"]
        cart["opened_at"] = event.recorded_at
    else:
        cart["status"] = ENDINGS[kind]
    cart["last_event_at"] = event.recorded_at
    return cart


def naive_loop(con: duckdb.DuckDBPyConnection) -> int:
    """A hand-written projector: every event through Python, one dict per cart. Returns the number of carts."""
    carts: dict[str, dict[str, Any]] = {}
    reader = con.sql(
        "SELECT stream_id, event_type, CAST(data AS VARCHAR), recorded_at, global_position "
        "FROM events ORDER BY transaction_id, global_position"
    ).to_arrow_reader(100_000)
    for batch in reader:
        for stream_id, kind, data, recorded_at, position in zip(*batch.to_pydict().values(), strict=True):
            payload = json.loads(data, parse_float=Decimal)
            cart = carts.get(stream_id)
            if cart is None:
                cart = carts[stream_id] = _initial()
            if kind == "ItemAdded" or kind == "ItemRemoved":
                quantity = payload["quantity"] if kind == "ItemAdded" else -payload["quantity"]
                cart["item_quantity"] += quantity
                cart["total_amount"] += quantity * payload["unit_price"]
            elif kind == "CartOpened":
                cart["customer_id"] = payload["customer_id"]
                cart["opened_at"] = recorded_at
            else:
                cart["status"] = ENDINGS[kind]
            cart["last_event_at"] = recorded_at
            cart["last_global_position"] = position
    return len(carts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the sql and polars bodies (best kept)")
    args = parser.parse_args()

    con = new_connection(threads=args.threads)
    started = time.perf_counter()
    prices = "[" + ", ".join(PRICES) + "]"
    con.execute(GENERATE.format(carts=args.events // 5, prices=prices))
    events = con.sql("SELECT count(*) FROM events").fetchone()
    assert events is not None
    n = int(events[0])
    print(f"generated {n:,} events in {time.perf_counter() - started:.1f} s (DuckDB threads: {args.threads})")

    registry = discover(bundled=True, folder=None)
    sql = registry.get("cart_summary", 1)
    variants: dict[str, Projection] = {
        "sql": sql,
        "polars": Projection(**{**_fields(sql), "body": Polars(polars_cart_summary), "name": "cart_summary_polars"}),
        "fold": Projection(
            **{**_fields(sql), "body": Fold(initial=_initial, evolve=_evolve), "name": "cart_summary_fold"}
        ),
    }
    # Wall time is what a rebuild waits; CPU time (all threads of this process) is what it costs, and
    # is the steadier figure on a machine shared with other work.
    seconds: dict[str, tuple[float, float]] = {}
    reference: pa.Table | None = None
    print(f"load average before: {os.getloadavg()[0]:.1f}; best of {args.repeat} runs for sql and polars")
    for kind, projection in variants.items():
        for _ in range(args.repeat if kind != "fold" else 1):
            wall, cpu = time.perf_counter(), time.process_time()
            result = compute(con, projection, "events", upcasters=registry.upcasters)
            run = (time.perf_counter() - wall, time.process_time() - cpu)
            seconds[kind] = min(seconds.get(kind, run), run)
        assert result.poison == ()
        if reference is None:
            reference = result.rows
        elif not result.rows.equals(reference):
            raise SystemExit(f"the {kind} body does not give the SQL body's rows")
        _report(kind, n, seconds[kind], result.rows.num_rows)
    wall, cpu = time.perf_counter(), time.process_time()
    carts = naive_loop(con)
    seconds["naive"] = (time.perf_counter() - wall, time.process_time() - cpu)
    assert reference is not None and carts == reference.num_rows
    _report("naive", n, seconds["naive"], carts)
    for kind in ("sql", "polars", "fold"):
        wall_ratio = seconds["naive"][0] / seconds[kind][0]
        cpu_ratio = seconds["naive"][1] / seconds[kind][1]
        print(f"{kind} vs naive loop: {wall_ratio:.1f}× wall, {cpu_ratio:.1f}× CPU")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


def _report(kind: str, events: int, seconds: tuple[float, float], rows: int) -> None:
    wall, cpu = seconds
    print(
        f"{kind:>6}: {wall:6.2f} s wall {events / wall / 1e6:5.2f} M events/s | {cpu:6.2f} s CPU "
        f"{events / cpu / 1e6:5.2f} M events/CPU-s  ({rows:,} carts)"
    )


def _fields(projection: Projection) -> dict[str, Any]:
    return {
        "name": projection.name,
        "version": projection.version,
        "description": projection.description,
        "key": projection.key,
        "consumes": projection.consumes,
        "columns": projection.columns,
        "requires": projection.requires,
    }


if __name__ == "__main__":
    main()
