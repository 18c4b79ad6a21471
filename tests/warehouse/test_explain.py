"""``explain``: a row back to the events that built it, checked against the store itself, for every store kind.

Each store kind keeps its events in its own table and body (native, Marten and Emmett: ``jsonb``;
``eventsourcing``: ``bytea`` JSON). The demo shop goes in through each kind's own writer, is ingested
and projected; then the events ``explain`` lists for a cart must be exactly those an independent query
over the *store's* table finds for that cart's stream, in stream order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from eventstore.adapters import store_kinds
from eventstore.adapters.writers import EMMETT_WRITER_DIR, append_demo_shop_store, marten_type_alias
from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.errors import ConfigurationError
from eventstore.native_store import NewEvent, append, create_schema
from eventstore.settings import Settings
from projections import Registry, Sql, discover
from tests.warehouse.conftest import with_projection
from warehouse import versions
from warehouse.explain import explain, explain_command, render_explanation
from warehouse.ingest import EventSource, ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import close_source, open_source

needs_node = pytest.mark.skipif(
    not (EMMETT_WRITER_DIR / "node_modules").exists(), reason=f"npm ci --prefix {EMMETT_WRITER_DIR} first"
)
KINDS = [pytest.param(kind, marks=needs_node) if kind == "emmett" else kind for kind in store_kinds()]
EVENTS = 120

#: Per store kind, an independent query over the store's own table: the positions and types of one
#: stream's events (the lake's stream id as the parameter), in stream order.
STORE_EVENTS = {
    "native": "SELECT global_position, event_type FROM events WHERE stream_id = %s ORDER BY stream_version",
    "marten": "SELECT seq_id, type FROM mt_events WHERE stream_id::text = %s ORDER BY version",
    "emmett": ("SELECT global_position, message_type FROM emt_messages WHERE stream_id = %s ORDER BY stream_position"),
    "eventsourcing": (
        "SELECT notification_id, split_part(topic, '.', -1) FROM shop_events WHERE originator_id::text = %s "
        "ORDER BY originator_version"
    ),
}


@pytest.fixture()
def sources() -> Iterator[list[EventSource]]:
    opened: list[EventSource] = []
    yield opened
    for source in opened:
        close_source(source)


def registry_for(kind: str) -> Registry:
    """The bundled projections; for Marten, cart_summary v1 reading Marten's snake_case type aliases."""
    registry = discover()
    if kind != "marten":
        return registry
    v1 = registry.get("cart_summary", 1)
    assert isinstance(v1.body, Sql)
    query = v1.body.query
    for event_type in v1.consumes:
        query = query.replace(f"'{event_type}'", f"'{marten_type_alias(event_type)}'")
    return with_projection(
        registry,
        "cart_summary",
        1,
        consumes=tuple(marten_type_alias(t) for t in v1.consumes),
        requires={marten_type_alias(t): fields for t, fields in v1.requires.items()},
        body=Sql(query),
    )


def same_type(a: str, b: str) -> bool:
    """Marten stores snake_case aliases with the version (cart_opened, item_added_v2): compare without those."""
    return all(x == y for x, y in [[re.sub(r"_v[0-9]+$", "", t).replace("_", "").lower() for t in (a, b)]])


def shop_lake(kind: str, dsn: str, lake_config: LakeConfig, sources: list[EventSource]) -> Any:
    """The demo shop in a store of ``kind``, ingested, cart_summary v1 built; the open lake."""
    if kind == "native":
        with connect(dsn) as conn:
            create_schema(conn)
        append_demo_shop(dsn, events=EVENTS, writers=2, seed=5, hold_seconds=0)
    else:
        append_demo_shop_store(kind, dsn, events=EVENTS, seed=5)
    source = open_source(Settings.from_env({"PROJECTIONIST_EVENT_STORE_KIND": kind}), dsn)
    sources.append(source)
    con = open_lake(lake_config)
    ingest(con, source)
    versions.rebuild(con, registry_for(kind), "cart_summary", 1)
    return con


@pytest.mark.parametrize("kind", KINDS)
def test_explain_lists_exactly_the_store_events_of_the_cart(
    kind: str, fresh_database: str, lake_config: LakeConfig, sources: list[EventSource]
) -> None:
    con = shop_lake(kind, fresh_database, lake_config, sources)
    try:
        # The busiest cart: several event types, upcast ItemAdded among them on most seeds.
        cart, events = con.execute(
            "SELECT stream_id, count(*) FROM raw.all_events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
        ).fetchone()
        explanation = explain(con, registry_for(kind), "cart_summary", cart, version=1)
    finally:
        con.close()
    with connect(fresh_database) as conn:
        expected = [(int(p), str(t)) for p, t in conn.execute(STORE_EVENTS[kind], [cart]).fetchall()]
    listed = [(e.global_position, e.event_type) for e in explanation.events]
    assert [p for p, _ in listed] == [p for p, _ in expected]
    assert all(same_type(a, b) for (_, a), (_, b) in zip(listed, expected, strict=True))
    assert len(listed) == events >= 3
    assert explanation.streams == [cart]
    assert explanation.row["cart_id"] == cart
    assert explanation.row["last_global_position"] == listed[-1][0]
    # The fields the projection reads (its requires), with the values the body saw.
    opened = explanation.events[0]
    assert same_type(opened.event_type, "CartOpened")
    assert opened.fields == {"customer_id": explanation.row["customer_id"]}
    items = [e for e in explanation.events if same_type(e.event_type, "ItemAdded")]
    assert items and all(set(e.fields) == {"product_id", "quantity", "unit_price"} for e in items)
    assert sum(int(e.fields["quantity"]) for e in items) >= explanation.row["item_quantity"]


def test_the_correlation_chain_crosses_streams_and_matches_the_store(
    store_dsn: str, lake_config: LakeConfig, sources: list[EventSource]
) -> None:
    append_demo_shop(store_dsn, events=EVENTS, writers=2, seed=5, hold_seconds=0)
    with connect(store_dsn) as conn:
        cart, correlation, last_id = conn.execute(
            "SELECT stream_id, metadata->>'correlation_id', event_id::text FROM events "
            "WHERE event_type = 'CartConfirmed' ORDER BY global_position LIMIT 1"
        ).fetchone()
        # The same request goes on in another stream: a payment nobody projects.
        payment = NewEvent(
            "PaymentRequested",
            {"amount": "12.50"},
            metadata={"correlation_id": correlation, "causation_id": last_id},
        )
        append(conn, "payment-1", "payment", [payment])
        # And a poison event in the cart: listed with the reason the version set it aside.
        poison = NewEvent("ItemAdded", {"product_id": "SKU-001", "quantity": "many", "unit_price": 1})
        append(conn, cart, "cart", [poison])
        conn.commit()
    source = open_source(Settings.from_env({}), store_dsn)
    sources.append(source)
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        registry = discover()
        versions.rebuild(con, registry, "cart_summary", 1)
        with pytest.raises(ConfigurationError, match=r"cart_summary has no live version: pass --version N \(built"):
            explain(con, registry, "cart_summary", cart)
        versions.promote(con, registry, "cart_summary", 1, force=True)
        explanation = explain(con, registry, "cart_summary", cart)  # the live version by default
        text = render_explanation(explanation)
        refusals = {
            ("cart_sumary", cart, None): r"unknown projection 'cart_sumary' \(did you mean 'cart_summary'\?\)",
            ("cart_summary", cart, 2): r"cart_summary v2 is not built.*pick one of \[1\]",
            ("cart_summary", "cart-nope", None): r"no row of cart_summary v1 has cart_id = 'cart-nope'.*e\.g\. 'cart-",
        }
        for (name, key, version), message in refusals.items():
            with pytest.raises(ConfigurationError, match=message):
                explain(con, registry, name, key, version)
    finally:
        con.close()
    with connect(store_dsn) as conn:
        others = [
            int(r[0])
            for r in conn.execute(
                "SELECT global_position FROM events WHERE metadata->>'correlation_id' = %s AND stream_id <> %s "
                "ORDER BY global_position",
                [correlation, cart],
            ).fetchall()
        ]
    assert explanation.version == 1 and explanation.state == "live"
    assert [e.global_position for e in explanation.chain] == others and len(others) == 1
    chained = explanation.chain[0]
    assert (chained.stream_id, chained.event_type, chained.causation_id) == ("payment-1", "PaymentRequested", last_id)
    poisoned = [e for e in explanation.events if e.dead_letter]
    assert [e.event_id for e in poisoned] == [str(poison.event_id)] and "quantity" in (poisoned[0].dead_letter or "")
    assert "dead-lettered: " in text
    confirmed = next(e for e in explanation.events if e.event_id == last_id)
    assert f"caused by {confirmed.position}" in text
    assert "1 other event(s) share it" in text


def test_explain_command_quotes_keys_for_a_shell() -> None:
    assert explain_command("cart_summary", 2, ["cart-1"]) == "projectionist explain cart_summary cart-1 --version 2"
    assert explain_command("daily_revenue", 1, ["2026-01-15", "EUR"]) == (
        "projectionist explain daily_revenue 2026-01-15,EUR --version 1"
    )
    assert explain_command("product_sales", 1, ["it's", "EUR"]) == (
        "projectionist explain product_sales 'it'\\''s,EUR' --version 1"
    )
