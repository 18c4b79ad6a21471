"""The demo shop generator: deterministic content, the documented event shapes, concurrent writers."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from decimal import Decimal

from eventstore.connection import connect
from eventstore.demo import append_demo_shop, first_stream_id, generate_carts


def test_same_seed_same_shop_and_first_stream_independent_of_size() -> None:
    a = [(c.stream_id, [(e.event_id, e.event_type, dict(e.data)) for e in c.events]) for c in generate_carts(300, 7)]
    b = [(c.stream_id, [(e.event_id, e.event_type, dict(e.data)) for e in c.events]) for c in generate_carts(300, 7)]
    assert a == b
    assert a != [(c.stream_id, None) for c in generate_carts(300, 8)]
    assert first_stream_id(7) == a[0][0] == next(generate_carts(5000, 7)).stream_id


def test_events_have_the_documented_shapes() -> None:
    carts = list(generate_carts(3000, 1))
    shapes = Counter()
    for cart in carts:
        assert cart.stream_id.startswith("cart-")
        events = cart.events
        assert events[0].event_type == "CartOpened"
        assert events[0].metadata["causation_id"] == events[0].metadata["correlation_id"]
        for prev, event in itertools.pairwise(events):
            assert event.metadata["causation_id"] == str(prev.event_id)
            assert event.recorded_at is not None and prev.recorded_at is not None
            assert event.recorded_at > prev.recorded_at
        for event in events:
            shapes[(event.event_type, event.event_version, tuple(sorted(event.data)))] += 1
            if "unit_price" in event.data:
                price = event.data["unit_price"]
                assert isinstance(price, Decimal) and price == price.quantize(Decimal("0.01"))
        assert events[-1].event_type in {"CartConfirmed", "CartCancelled", "ItemAdded", "ItemRemoved"}
    assert set(shapes) == {
        ("CartOpened", 1, ("customer_id", "email")),
        ("ItemAdded", 1, ("product_id", "quantity", "unit_price")),
        ("ItemAdded", 2, ("currency", "product_id", "quantity", "unit_price")),
        ("ItemRemoved", 1, ("product_id", "quantity", "unit_price")),
        ("CartConfirmed", 1, ()),
        ("CartCancelled", 1, ("reason",)),
    }


def test_concurrent_writers_append_every_event_and_commit_out_of_order(store_dsn: str) -> None:
    result = append_demo_shop(store_dsn, events=3000, writers=4, seed=3)
    expected = {str(e.event_id) for c in generate_carts(3000, 3) for e in c.events}
    with connect(store_dsn) as conn:
        rows = conn.execute("SELECT event_id::text, data FROM events").fetchall()
        versions = conn.execute(
            "SELECT count(*) FROM (SELECT stream_id, count(*) n, min(stream_version) lo, max(stream_version) hi "
            "FROM events GROUP BY 1) s WHERE lo <> 1 OR hi <> n"
        ).fetchone()
    assert result.events == len(expected) == len(rows)
    assert {r[0] for r in rows} == expected
    assert result.out_of_order_commits >= 1, "a transaction should commit after one holding higher positions"
    assert versions == (0,)
    assert all(isinstance(json.loads(json.dumps(r[1])), dict) for r in rows)
