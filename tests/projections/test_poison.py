"""Poison events: malformed or incomplete events are reported with a reason, skipped or stopped on, in every kind."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from eventstore.demo import generate_carts
from projections import (
    CHECKS,
    DATA_ERRORS,
    Column,
    Event,
    Fold,
    PoisonPolicy,
    Projection,
    Registry,
    Sql,
    compute,
    compute_into,
)
from projections.errors import PoisonEventError
from tests.projections.rawevents import RawEvent, create_raw_events, insert_raw_events, shop_events

NAMES = [("cart_summary", 1), ("cart_summary", 2), ("daily_revenue", 1), ("product_sales", 1)]


def _corrupt(events: list[RawEvent]) -> dict[int, tuple[str, str]]:
    """Damage a few events in place; return their positions and the reason each projection must give."""
    by_type: dict[str, list[RawEvent]] = {}
    for event in events:
        by_type.setdefault(event.event_type, []).append(event)
    added, removed, opened = by_type["ItemAdded"], by_type["ItemRemoved"], by_type["CartOpened"]
    damage = {
        added[3]: ('{"product_id": "SKU-001", "quantity": 2', "data is not valid JSON"),
        added[10]: ({"product_id": "SKU-002", "unit_price": 3.5}, "lacks field 'quantity'"),
        added[20]: ({"product_id": "SKU-002", "quantity": 2.5, "unit_price": 3.5}, "field 'quantity' is not BIGINT"),
        removed[2]: ({"product_id": "SKU-002", "quantity": "abc", "unit_price": 3.5}, "field 'quantity' is not BIGINT"),
        # The right JSON kind, but beyond DECIMAL(18,2): found by the precise check after the body fails.
        added[30]: (
            {"product_id": "SKU-002", "quantity": 1, "unit_price": 1e20, "currency": "EUR"},
            "'unit_price' is not DECIMAL(18,2)",
        ),
        opened[5]: ("[1, 2]", "data is not a JSON object but ARRAY"),
    }
    for event, (data, _) in damage.items():
        event.data = data
    return {event.global_position: (event.event_id, reason) for event, (_, reason) in damage.items()}


def _table(con: duckdb.DuckDBPyConnection, name: str, events: list[RawEvent]) -> None:
    create_raw_events(con, name, data_type="VARCHAR")  # a JSON column could not even hold the malformed one
    insert_raw_events(con, events, name)


@pytest.mark.parametrize(("name", "version"), NAMES, ids=[f"{n}_v{v}" for n, v in NAMES])
def test_poison_is_reported_skipped_or_stopped_on(
    con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int
) -> None:
    projection = registry.get(name, version)
    events = shop_events(list(generate_carts(600, seed=8)))
    damaged = copy.deepcopy(events)
    bad = _corrupt(damaged)
    _table(con, "damaged", damaged)
    _table(con, "healthy", [e for e in events if e.global_position not in bad])

    skipped = compute(con, projection, "damaged", policy="skip")
    reported = {p.global_position: (p.event_id, p.reason) for p in skipped.poison}
    checked = {  # CartOpened payloads matter to cart_summary only
        pos for pos, (_, reason) in bad.items() if name == "cart_summary" or "ARRAY" not in reason
    }
    assert set(reported) == checked
    for position in checked:
        assert reported[position][0] == bad[position][0]
        assert bad[position][1] in reported[position][1]
    assert skipped.rows.to_pylist() == compute(con, projection, "healthy").rows.to_pylist()

    # The stop policy refuses; the error names the event (the first in reading order) and the fix.
    first = next(e for e in damaged if e.global_position in checked)
    with pytest.raises(PoisonEventError, match=first.event_id) as caught:
        compute(con, projection, "damaged", policy="stop")
    assert caught.value.global_position == first.global_position and not caught.value.retryable
    assert "skip" in str(caught.value) and projection.name in str(caught.value)

    # Live updates (with keys) skip by default and report only the poison of those keys' events.
    some = compute(con, projection, "damaged", skipped.rows.slice(0, 3).select(list(projection.key)))
    assert some.rows.to_pylist() == skipped.rows.slice(0, 3).to_pylist()
    assert {p.global_position for p in some.poison} <= checked


def _strict_evolve(state: dict[str, Any], event: Event) -> dict[str, Any]:
    if event.event_type == "ItemAdded":
        if event.data["quantity"] >= 5:
            raise ValueError(f"quantity {event.data['quantity']} is above the limit")
        state["items"] += event.data["quantity"]
        state["amount"] += event.data["quantity"] * event.data["unit_price"]
    return state


STRICT = Projection(
    name="strict_carts",
    version=1,
    description="Items per cart, refusing quantities of 5 or more.",
    key=("cart_id",),
    consumes=("ItemAdded",),
    columns=(
        Column("cart_id", "VARCHAR", "Cart."),
        Column("items", "BIGINT", "Items."),
        Column("amount", "DECIMAL(18,2)", "Amount."),
    ),
    body=Fold(initial=lambda: {"items": 0, "amount": Decimal(0)}, evolve=_strict_evolve),
    poison=PoisonPolicy(live="skip", rebuild="skip"),
)


def test_fold_reports_events_its_evolve_refuses(con: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    events = shop_events(list(generate_carts(600, seed=8)))
    _table(con, "events", events)
    big = [e for e in events if e.event_type == "ItemAdded" and isinstance(e.data, dict) and e.data["quantity"] >= 5]
    assert big
    result = compute(con, STRICT, "events")
    assert [(p.event_id, p.reason) for p in result.poison] == [
        (e.event_id, f"ValueError in evolve: quantity {e.data['quantity']} is above the limit")  # type: ignore[index]
        for e in sorted(big, key=lambda e: (e.stream_id, e.stream_version))
    ]
    rows = {r["cart_id"]: r for r in result.rows.to_pylist()}
    small = [e for e in events if e.event_type == "ItemAdded" and e not in big]
    assert sum(r["items"] for r in rows.values()) == sum(e.data["quantity"] for e in small)  # type: ignore[index]
    # A cart none of whose events could be applied has no row.
    assert all(any(e.stream_id == cart for e in small) for cart in rows)
    with pytest.raises(PoisonEventError, match="above the limit"):
        compute(con, STRICT, "events", policy="stop")


OPENED_ONLY = Projection(
    name="opened_carts",
    version=1,
    description="Carts and who opened them; its body never looks at the items.",
    key=("cart_id",),
    consumes=("CartOpened", "ItemAdded"),
    requires={"CartOpened": {"customer_id": "VARCHAR"}, "ItemAdded": {"quantity": "BIGINT"}},
    columns=(Column("cart_id", "VARCHAR", "Cart."), Column("customer_id", "VARCHAR", "Who opened it.")),
    body=Sql(
        "SELECT stream_id AS cart_id, any_value(data->>'customer_id') AS customer_id, "
        "max(global_position) AS last_global_position FROM events WHERE event_type = 'CartOpened' GROUP BY stream_id"
    ),
)


def test_poison_the_body_filters_out_is_still_found(con: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    # The single pass validates inside the body's own query: the body's WHERE must not let events skip
    # the check, or a clean-looking result would hide poison that the two-pass path reports.
    events = shop_events(list(generate_carts(300, seed=4)))
    item = next(e for e in events if e.event_type == "ItemAdded")
    item.data = {"product_id": "SKU-001", "unit_price": 3.5}  # lacks quantity
    _table(con, "events", events)
    with pytest.raises(PoisonEventError, match=item.event_id):
        compute(con, OPENED_ONLY, "events", upcasters=registry.upcasters, policy="stop")
    skipped = compute(con, OPENED_ONLY, "events", upcasters=registry.upcasters, policy="skip")
    assert [p.event_id for p in skipped.poison] == [item.event_id]


def test_compute_into_appends_the_rows_compute_returns_at_every_check(
    con: duckdb.DuckDBPyConnection, registry: Registry
) -> None:
    events = shop_events(list(generate_carts(600, seed=8)))
    damaged = copy.deepcopy(events)
    bad = _corrupt(damaged)
    _table(con, "damaged", damaged)
    _table(con, "healthy", [e for e in events if e.global_position not in bad])
    projection = registry.get("cart_summary", 1)
    columns = ", ".join(f"{c.name} {c.type}" for c in projection.output_columns)
    expected = compute(con, projection, "damaged", policy="skip")
    for check in CHECKS:
        con.execute(f"CREATE OR REPLACE TABLE out ({columns})")
        healthy = compute_into(con, projection, "healthy", "out", upcasters=registry.upcasters, check=check)
        assert healthy.poison == () and healthy.rows == expected.rows.num_rows
        assert con.sql("SELECT * FROM out ORDER BY cart_id").to_arrow_table().equals(expected.rows)
        con.execute("DELETE FROM out")
        if check == "single_pass":  # it does not name poison: it raises, and the caller tries the next check
            with pytest.raises(DATA_ERRORS):
                compute_into(con, projection, "damaged", "out", upcasters=registry.upcasters, policy="skip")
            continue
        try:
            found = compute_into(
                con, projection, "damaged", "out", upcasters=registry.upcasters, policy="skip", check=check
            )
        except DATA_ERRORS:
            assert check == "two_pass"  # the overflowing price: only the precise check names it
            continue
        assert check == "precise"
        assert {p.global_position for p in found.poison} == set(bad)
        assert con.sql("SELECT * FROM out ORDER BY cart_id").to_arrow_table().equals(expected.rows)


@pytest.mark.parametrize("damaged_index", range(6))
def test_the_single_pass_raises_for_every_kind_of_poison(
    con: duckdb.DuckDBPyConnection, registry: Registry, damaged_index: int
) -> None:
    # The single pass checks less per event than the two-pass path (it needs no reason), so it
    # must still stop at each kind of poison on its own; the next check then names it.
    events = shop_events(list(generate_carts(600, seed=8)))
    damaged = copy.deepcopy(events)
    bad = sorted(_corrupt(damaged).items())
    position, (event_id, reason) = bad[damaged_index]
    one = [d if d.global_position == position else e for d, e in zip(damaged, events, strict=True)]
    _table(con, "events", one)
    projection = registry.get("cart_summary", 1)
    columns = ", ".join(f"{c.name} {c.type}" for c in projection.output_columns)
    con.execute(f"CREATE TABLE out ({columns})")
    with pytest.raises(DATA_ERRORS):
        compute_into(con, projection, "events", "out", upcasters=registry.upcasters)
    result = compute(con, projection, "events", upcasters=registry.upcasters, policy="skip")
    assert [(p.event_id, reason in p.reason) for p in result.poison] == [(event_id, True)]
