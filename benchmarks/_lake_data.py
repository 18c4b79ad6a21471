"""A fast SQL-side bulk loader of shop-like events for the ingest benchmark and the lake's tests.

The demo generator appends ~13 k events/s through Python; this one builds the rows inside
PostgreSQL (``INSERT … SELECT`` over ``generate_series``) at a few hundred thousand events/s, in
several transactions so ``transaction_id`` varies as in a real store. Each cart stream has five
events: CartOpened, three ItemAdded (v1 and v2 alternate by cart), then CartConfirmed or
CartCancelled; every event has ``correlation_id`` and ``causation_id`` in its metadata.
"""

from __future__ import annotations

from eventstore.connection import connect
from eventstore.native_store import create_schema, table_ref

__all__ = ["EVENTS_PER_CART", "bulk_append"]

EVENTS_PER_CART = 5

_INSERT = """
INSERT INTO {table} (stream_id, stream_type, stream_version, event_id, event_type, event_version,
                     data, metadata, recorded_at)
SELECT 'cart-' || md5(%(seed)s || ':' || c)::uuid,
       'cart',
       v,
       md5(%(seed)s || ':' || c || ':' || v)::uuid,
       CASE WHEN v = 1 THEN 'CartOpened' WHEN v < 5 THEN 'ItemAdded'
            WHEN c %% 4 = 0 THEN 'CartCancelled' ELSE 'CartConfirmed' END,
       CASE WHEN v BETWEEN 2 AND 4 AND c %% 2 = 0 THEN 2 ELSE 1 END,
       CASE WHEN v = 1 THEN jsonb_build_object('customer_id', 'customer-' || (c %% 5000))
            WHEN v < 5 THEN jsonb_build_object(
                'product_id', 'SKU-' || lpad(((c * 7 + v) %% 20)::text, 3, '0'),
                'quantity', 1 + (c + v) %% 5,
                'unit_price', ((c * 13 + v) %% 10000) / 100.0)
                || CASE WHEN c %% 2 = 0 THEN '{{"currency": "EUR"}}'::jsonb ELSE '{{}}'::jsonb END
            WHEN c %% 4 = 0 THEN jsonb_build_object('reason', 'changed mind')
            ELSE '{{}}'::jsonb END,
       jsonb_build_object('correlation_id', md5('corr:' || %(seed)s || ':' || c)::uuid,
                          'causation_id', CASE WHEN v = 1 THEN md5('corr:' || %(seed)s || ':' || c)::uuid
                                               ELSE md5(%(seed)s || ':' || c || ':' || (v - 1))::uuid END),
       timestamptz '2026-01-01 00:00:00+00' + c * interval '7 seconds' + v * interval '1 second'
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS c, generate_series(1, 5) AS v
ORDER BY c, v
"""


def bulk_append(
    dsn: str, events: int, *, transactions: int = 8, seed: int = 0, schema: str = "public", table: str = "events"
) -> int:
    """Append about ``events`` events (whole carts) in ``transactions`` commits; returns how many."""
    carts = max(1, events // EVENTS_PER_CART)
    with connect(dsn, autocommit=True) as conn:
        create_schema(conn, schema, table)
        ref = table_ref(schema, table).as_string(conn)
        row = conn.execute(f"SELECT coalesce(max(global_position), 0) FROM {ref}").fetchone()
        offset = int(row[0]) if row else 0  # new cart numbers on every call: ids stay unique
        per = -(-carts // max(1, transactions))
        for first in range(0, carts, per):
            last = min(carts, first + per) - 1
            with conn.transaction():
                conn.execute(
                    _INSERT.format(table=ref),  # type: ignore[arg-type]
                    {"seed": str(seed), "first": offset + first, "last": offset + last},
                )
    return carts * EVENTS_PER_CART
