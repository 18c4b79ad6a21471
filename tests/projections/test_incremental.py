"""Incremental equals full: recomputing only the touched keys batch by batch gives the full table.

Random event sequences (several carts, any order of events, confirmations undone by later
cancellations, items removed to zero, v1 and v2 ItemAdded, days changing) are split into random
batches by checkpoint; after each batch the touched keys' rows are replaced by ``compute`` for
those keys. At the end the table must equal a full computation, for each bundled projection
(and so for each kind: SQL, polars, fold).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.demo import generate_carts
from eventstore.duckdb_connections import new_connection
from eventstore.positions import START, Checkpoint
from projections import Projection, Registry, compute, discover, touched_keys
from tests.projections.rawevents import RawEvent, create_raw_events, insert_raw_events, shop_events

PRODUCTS = ("SKU-A", "SKU-B", "SKU-C")
PRICES = (Decimal("0.99"), Decimal("12.50"), Decimal("100.00"))
BASE = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)

operation = st.one_of(
    st.tuples(st.just("CartOpened"), st.sampled_from(("alice", "bob"))),
    st.tuples(
        st.just("ItemAdded"),
        st.sampled_from(PRODUCTS),
        st.integers(1, 4),
        st.sampled_from(PRICES),
        st.sampled_from((None, "EUR", "USD")),  # None: an ItemAdded v1
    ),
    st.tuples(st.just("ItemRemoved"), st.sampled_from(PRODUCTS), st.integers(1, 3), st.sampled_from(PRICES)),
    st.tuples(st.just("CartConfirmed")),
    st.tuples(st.just("CartCancelled")),
    st.tuples(st.just("CartConfirmed")),  # twice as likely: confirmations undone and redone
)
# (stream, operation, hours after the previous event of that stream, starts a new transaction)
step = st.tuples(st.integers(0, 2), operation, st.integers(0, 20), st.booleans())


def _events(steps: list[tuple[int, tuple[Any, ...], int, bool]]) -> list[RawEvent]:
    versions: dict[str, int] = {}
    clocks: dict[str, datetime] = {}
    events = []
    transaction = 500
    for position, (stream, op, hours, new_transaction) in enumerate(steps, start=1):
        stream_id = f"cart-{stream}"
        versions[stream_id] = versions.get(stream_id, 0) + 1
        clocks[stream_id] = clocks.get(stream_id, BASE) + timedelta(hours=hours, minutes=1)
        transaction += 1 if new_transaction else 0
        kind, version, data = op[0], 1, {}
        if kind == "CartOpened":
            data = {"customer_id": op[1]}
        elif kind == "ItemAdded":
            data = {"product_id": op[1], "quantity": op[2], "unit_price": op[3]}
            if op[4] is not None:
                data["currency"], version = op[4], 2
        elif kind == "ItemRemoved":
            data = {"product_id": op[1], "quantity": op[2], "unit_price": op[3]}
        elif kind == "CartCancelled":
            data = {"reason": "changed_mind"}
        events.append(
            RawEvent(position, transaction, stream_id, versions[stream_id], kind, data, clocks[stream_id], version)
        )
    return events


def _key(projection: Projection, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in projection.key)


def incremental_equals_full(
    con: duckdb.DuckDBPyConnection, projection: Projection, events: list[RawEvent], cuts: list[int]
) -> None:
    create_raw_events(con, "events")
    table: dict[tuple[Any, ...], dict[str, Any]] = {}
    after: Checkpoint = START
    bounds = sorted({0, len(events), *(c % (len(events) + 1) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        batch = events[lo:hi]
        insert_raw_events(con, batch)
        until = batch[-1].checkpoint
        keys = touched_keys(con, projection, "events", after, until)
        for key in keys.to_pylist():
            table.pop(_key(projection, key), None)
        result = compute(con, projection, "events", keys)
        assert result.poison == ()
        for row in result.rows.to_pylist():
            assert _key(projection, row) in {_key(projection, k) for k in keys.to_pylist()}
            table[_key(projection, row)] = row
        after = until
    full = compute(con, projection, "events").rows.to_pylist()
    assert [table[k] for k in sorted(table)] == full


BUNDLED = discover(bundled=True, folder=None)
VERSIONS = [(p.name, p.version) for p in BUNDLED]


@pytest.mark.parametrize(("name", "version"), VERSIONS, ids=[f"{n}_v{v}" for n, v in VERSIONS])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=30), cuts=st.lists(st.integers(0, 30), max_size=4))
def test_incremental_equals_full(
    name: str, version: int, steps: list[tuple[int, tuple[Any, ...], int, bool]], cuts: list[int]
) -> None:
    with new_connection() as con:
        incremental_equals_full(con, BUNDLED.get(name, version), _events(steps), cuts)


def test_incremental_equals_full_on_a_demo_shop(registry: Registry) -> None:
    # Demo order: positions and (transaction_id, global_position) order differ, as with concurrent writers.
    events = shop_events(list(generate_carts(600, seed=5)))
    assert [e.global_position for e in events] != sorted(e.global_position for e in events)
    for projection in registry:
        with new_connection() as con:
            incremental_equals_full(con, projection, events, [97, 250, 251, 400])


def test_a_confirmation_undone_or_moved_later_leaves_its_old_day(registry: Registry) -> None:
    def cart(stream: str, *ops: tuple[Any, ...]) -> list[tuple[int, tuple[Any, ...], int, bool]]:
        return [(int(stream), op, 30, True) for op in ops]

    item = ("ItemAdded", "SKU-A", 2, Decimal("12.50"), "USD")
    steps = [
        *cart("0", ("CartOpened", "alice"), item, ("CartConfirmed",)),
        *cart("1", ("CartOpened", "bob"), item, ("CartConfirmed",)),
        *cart("0", ("CartCancelled",)),  # leaves its day
        *cart("1", ("CartConfirmed",)),  # confirmed again, a day later: moves
    ]
    for projection in registry:
        with new_connection() as con:
            incremental_equals_full(con, projection, _events(steps), [6])
