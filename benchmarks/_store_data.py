"""Benchmark data: a native event store filled with N shop-like events, fast, on the server side.

The demo generator appends through the append API at ~13 k events/s, too slow for millions.
This loader builds the same kind of data inside PostgreSQL (``INSERT ... SELECT
generate_series``): cart streams of five events — CartOpened, ItemAdded (v1 in the first half,
v2 with ``currency`` after), a third item that is sometimes an ItemRemoved, and CartConfirmed
or CartCancelled — with JSONB payloads (``unit_price`` as a 2-place decimal) and metadata
carrying ``correlation_id`` (per cart) and ``causation_id`` (the previous event's id). Rows go
in by chunks, one transaction each, so ``transaction_id`` varies as it does in a real store.

A database that already holds a completed load of N events is reused, so reruns are fast.
"""

from __future__ import annotations

import time
from pathlib import Path

from eventstore.connection import EmbeddedServer, connect, ensure_database
from eventstore.demo import PRODUCTS
from eventstore.native_store import create_schema

__all__ = ["store_with_events"]

#: Bump when the generated rows change, so an old load is not mistaken for the new one.
LAYOUT = 1
#: Events per transaction: at most this many, and at least ~40 transactions per load.
CHUNK = 50_000

# One row per event number n in [lo, hi): cart c = n / 5, slot s = n % 5.
_FILL = """
INSERT INTO public.events (stream_id, stream_type, stream_version, event_id, event_type, event_version,
                           data, metadata, recorded_at)
SELECT 'cart-' || md5('cart' || c)::uuid, 'cart', s + 1, md5('event' || n)::uuid,
       CASE WHEN s = 0 THEN 'CartOpened'
            WHEN s = 3 AND c %% 10 < 3 THEN 'ItemRemoved'
            WHEN s < 4 THEN 'ItemAdded'
            WHEN c %% 4 = 0 THEN 'CartCancelled'
            ELSE 'CartConfirmed' END,
       CASE WHEN s IN (1, 2, 3) AND v2 AND NOT (s = 3 AND c %% 10 < 3) THEN 2 ELSE 1 END,
       CASE WHEN s = 0
            THEN jsonb_build_object('customer_id', 'customer-' || substr(md5('customer' || c %% 50000), 1, 12))
            WHEN s < 4 THEN jsonb_build_object(
                     'product_id', 'SKU-' || lpad((1 + (n * 7) %% 20)::text, 3, '0'),
                     'quantity', 1 + (n * 13) %% 5,
                     'unit_price', (%(prices)s::numeric[])[1 + (n * 7) %% 20])
                 || CASE WHEN v2 AND NOT (s = 3 AND c %% 10 < 3)
                         THEN jsonb_build_object('currency', CASE WHEN c %% 5 = 0 THEN 'USD' ELSE 'EUR' END)
                         ELSE '{}'::jsonb END
            WHEN c %% 4 = 0 THEN jsonb_build_object('reason', (ARRAY['changed_mind', 'payment_failed', 'out_of_stock',
                                                                      'timeout'])[1 + (c / 4) %% 4])
            ELSE '{}'::jsonb END,
       jsonb_build_object('correlation_id', md5('correlation' || c)::uuid,
                          'causation_id', CASE WHEN s = 0 THEN md5('correlation' || c)::uuid
                                               ELSE md5('event' || (n - 1))::uuid END),
       timestamptz '2026-01-01 00:00:00+00' + n * interval '3 seconds'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS n,
     LATERAL (SELECT n / 5 AS c, (n %% 5)::int AS s, n >= %(total)s / 2 AS v2) AS k
ORDER BY n
"""


def _loaded(dsn: str) -> int | None:
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('public.bench_load') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        done = conn.execute("SELECT events FROM public.bench_load WHERE layout = %s", (LAYOUT,)).fetchone()
        count = conn.execute("SELECT count(*) FROM public.events").fetchone()
    if done and count and int(done[0]) == int(count[0]):
        return int(done[0])
    return None


def store_with_events(home: Path, events: int, *, quiet: bool = False) -> str:
    """DSN of a native store on the embedded server under ``home`` holding exactly ``events`` events."""
    server = EmbeddedServer(home).start()
    dsn = ensure_database(server, f"bench_events_{events}")
    if _loaded(dsn) == events:
        return dsn
    started = time.perf_counter()
    prices = [str(price) for price in PRODUCTS.values()]  # SKU-001 … SKU-020, as in the demo shop
    with connect(dsn, autocommit=True) as conn:
        create_schema(conn)
        conn.execute("DROP TABLE IF EXISTS public.bench_load")
        conn.execute("TRUNCATE public.events")
        chunk = max(1, min(CHUNK, -(-events // 40)))
        for lo in range(0, events, chunk):
            hi = min(lo + chunk, events)
            # autocommit: one transaction per chunk
            conn.execute(_FILL, {"lo": lo, "hi": hi, "total": events, "prices": prices})
            if not quiet:
                print(f"\r  loading events: {hi:,}/{events:,}", end="", flush=True)
        # Set hint bits and the visibility map now, so no measured read pays for them.
        conn.execute("VACUUM (ANALYZE) public.events")
        conn.execute("CHECKPOINT")
        conn.execute("CREATE TABLE public.bench_load (layout int, events bigint)")
        conn.execute("INSERT INTO public.bench_load VALUES (%s, %s)", (LAYOUT, events))
    if not quiet:
        print(f"\r  loaded {events:,} events in {time.perf_counter() - started:.1f} s")
    return dsn
