"""The event catalog over the demo shop: types, versions, fields and their JSON types, kept incrementally, flagged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import duckdb
import pytest

from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.native_store import NewEvent, append
from eventstore.settings import Settings
from projections import discover
from warehouse.event_catalog import catalog_entries, refresh_event_catalog, schema_changes, unhandled_entries
from warehouse.ingest import EventSource, LandedBatch, ingest, lake_checkpoint
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import close_source, open_source

#: The demo's events are recorded in the first months of 2026; those appended here get the server's clock.
BETWEEN = datetime(2026, 6, 1, tzinfo=UTC)


@pytest.fixture()
def source(store_dsn: str) -> Iterator[EventSource]:
    opened = open_source(Settings.from_env({}), store_dsn)
    yield opened
    close_source(opened)


def store_counts(dsn: str) -> dict[tuple[str, int], int]:
    """Events per type and version, counted in the store itself."""
    with connect(dsn) as conn:
        rows = conn.execute("SELECT event_type, event_version, count(*) FROM events GROUP BY 1, 2").fetchall()
    return {(str(t), int(v)): int(n) for t, v, n in rows}


def test_the_catalog_lists_types_versions_fields_and_flags_what_changed(
    store_dsn: str, lake_config: LakeConfig, source: EventSource
) -> None:
    append_demo_shop(store_dsn, events=400, writers=2, seed=3, hold_seconds=0)
    registry = discover()
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        assert refresh_event_catalog(con) == sum(store_counts(store_dsn).values())
        assert refresh_event_catalog(con) == 0  # up to date: nothing is read twice
        fields = dict(
            con.execute(
                "SELECT event_version, list_transform(fields, f -> f.field || ':' || f.json_type || ':' || f.presence) "
                "FROM analytics.event_catalog WHERE event_type = 'ItemAdded'"
            ).fetchall()
        )
        # ItemAdded v1 and v2, currency present only in v2 (in every v2 event), as strings.
        assert fields == {
            1: ["product_id:string:1.0", "quantity:number:1.0", "unit_price:number:1.0"],
            2: ["currency:string:1.0", "product_id:string:1.0", "quantity:number:1.0", "unit_price:number:1.0"],
        }
        entries = catalog_entries(con, registry, idle_before=BETWEEN)
        assert {(e.event_type, e.event_version): e.events for e in entries} == store_counts(store_dsn)
        assert {e.stream_type for e in entries} == {"cart"}
        flagged = {(e.event_type, e.event_version): e.flags for e in entries if e.flags}
        # The demo writes no v1 ItemAdded after its cut-over: only its upcaster keeps the old ones readable.
        assert list(flagged) == [("ItemAdded", 1)] and flagged[("ItemAdded", 1)][0].startswith("upcaster_idle: ")
        assert schema_changes(entries, BETWEEN) == []

        # Later: a payment event nobody handles, an ItemAdded v3 nobody declares, a quantity sent as text.
        with connect(store_dsn) as conn:
            cart = conn.execute("SELECT stream_id FROM events ORDER BY global_position LIMIT 1").fetchone()[0]
            append(conn, "payment-1", "payment", [NewEvent("PaymentRequested", {"amount": 12.5})])
            item = {"product_id": "SKU-001", "quantity": "2", "unit_price": 4.99, "currency": "EUR"}
            append(conn, cart, "cart", [NewEvent("ItemAdded", item, event_version=2)])
            append(conn, cart, "cart", [NewEvent("ItemAdded", {**item, "quantity": 1}, event_version=3)])
            conn.commit()
        ingest(con, source)
        assert refresh_event_catalog(con) == 3  # only the new events are read
        entries = catalog_entries(con, registry, idle_before=BETWEEN)
        checkpoint = lake_checkpoint(con)[0]
        catalogued = lake_checkpoint(con, "event_catalog")[0]
    finally:
        con.close()
    assert catalogued == checkpoint
    assert {(e.event_type, e.event_version): e.events for e in entries} == store_counts(store_dsn)
    by_key = {(e.event_type, e.event_version): e for e in entries}
    unhandled = {(e.event_type, e.event_version): e.flags[0] for e in unhandled_entries(entries)}
    assert unhandled == {
        ("ItemAdded", 3): "unhandled: no projection or upcaster reads ItemAdded v3 (they read v1..v2): add an upcaster "
        "or declare the version in the projection",
        ("PaymentRequested", 1): "unhandled: no projection consumes PaymentRequested",
    }
    assert "type_changed: quantity is number and string in v2" in by_key[("ItemAdded", 2)].flags
    assert "type_changed: quantity is number in v3, string in another version" in by_key[("ItemAdded", 3)].flags
    assert [c.describe().split(" (")[0] for c in schema_changes(entries, BETWEEN)] == [
        "new: PaymentRequested v1",
        "type changed: ItemAdded v2.quantity is now string",
        "new: ItemAdded v3",
    ]


def test_the_catalog_kept_in_the_ingest_commit_counts_every_event_once_archived_ones_too(
    store_dsn: str, lake_config: LakeConfig, source: EventSource
) -> None:
    """follow's catalog rides in each ingest batch and reads only raw.events when it is caught up with the batch
    (the batch's events cannot be archived yet); a catalog behind the batch reads both tiers."""
    from eventstore.positions import Checkpoint
    from warehouse.archive import archive_lake
    from warehouse.event_catalog import CatalogAddition, add_new_events, ensure_event_catalog

    append_demo_shop(store_dsn, events=300, writers=1, seed=5, hold_seconds=0)
    con = open_lake(lake_config)
    try:
        ensure_event_catalog(con)
        ingest(con, source)  # the catalog stays behind
        assert archive_lake(con, "0s").streams > 0  # finished carts move to the cold tier
        added: list[tuple[Checkpoint, CatalogAddition | None]] = []

        def catalog(c: duckdb.DuckDBPyConnection, batch: LandedBatch) -> None:
            added.append((batch.after, add_new_events(c, batch=batch)))

        with connect(store_dsn) as conn:
            append(conn, "payment-1", "payment", [NewEvent("PaymentRequested", {"amount": 1})])
            conn.commit()
        ingest(con, source, in_commit=catalog)  # behind: the addition reads both tiers
        assert [a.events for _, a in added if a] == [sum(store_counts(store_dsn).values())]
        with connect(store_dsn) as conn:
            append(conn, "payment-2", "payment", [NewEvent("PaymentRequested", {"amount": n}) for n in (2, 3)])
            conn.commit()
        ingest(con, source, in_commit=catalog)  # caught up: raw.events only, the two new events
        assert [a.events for _, a in added[1:] if a] == [2]
        total = con.execute("SELECT sum(events) FROM analytics.event_catalog").fetchone()
        assert total == (sum(store_counts(store_dsn).values()),)
    finally:
        con.close()


def test_the_catalog_names_and_types_the_fields_of_awkward_payloads_as_stored(
    store_dsn: str, lake_config: LakeConfig, source: EventSource
) -> None:
    """Keys with JSON-pointer and JSONPath characters keep their names; an array or a scalar payload has no fields."""
    payloads = [
        '{"a/b": 1, "t~0": "x", "x.y": [1], "q\\"uote": null, "": true, "ünï": {"n": 1}, "$[0]": 2.5}',
        '{"a/b": "now a string"}',
        '[{"a/b": 1}, 2]',
        '"just a string"',
        "42",
        "{}",
    ]
    with connect(store_dsn) as conn:
        for n, payload in enumerate(payloads, 1):
            conn.execute(
                "INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, data) "
                "VALUES ('odd-1', 'odd', %s, gen_random_uuid(), 'Odd', %s::jsonb)",
                (n, payload),
            )
        conn.commit()
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        assert refresh_event_catalog(con) == len(payloads)
        rows = con.execute(
            "SELECT events, list_transform(fields, f -> [f.field, f.json_type, f.events::VARCHAR]) "
            "FROM analytics.event_catalog WHERE event_type = 'Odd'"
        ).fetchone()
    finally:
        con.close()
    assert rows is not None and rows[0] == len(payloads)
    assert sorted(rows[1]) == [
        ["", "boolean", "1"],
        ["$[0]", "number", "1"],
        ["a/b", "number", "1"],
        ["a/b", "string", "1"],
        ['q"uote', "null", "1"],
        ["t~0", "string", "1"],
        ["x.y", "array", "1"],
        ["ünï", "object", "1"],
    ]
