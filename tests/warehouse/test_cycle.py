"""One advance's events read once (warehouse.versions.cycle), and what follow remembers of the streams."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from eventstore.connection import connect
from eventstore.native_store import NewEvent, StreamAppend, append_streams
from projections import Registry, discover
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import project, rebuild
from warehouse.versions.cycle import StreamMemory
from warehouse.versions.incremental import StreamKeysCache


def _append(store_dsn: str, *carts: tuple[str, list[NewEvent]]) -> None:
    with connect(store_dsn) as conn:
        append_streams(conn, [StreamAppend(stream, "cart", events) for stream, events in carts])


def _item(product: str, quantity: int = 1) -> NewEvent:
    data = {"product_id": product, "quantity": quantity, "unit_price": 4.25, "currency": "EUR"}
    return NewEvent("ItemAdded", data, event_version=2, recorded_at=datetime(2026, 5, 1, 9, tzinfo=UTC))


def _opened(i: int) -> NewEvent:
    return NewEvent("CartOpened", {"customer_id": f"c{i}"})


def _lake_of_old_carts(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry, names: list[str]
) -> duckdb.DuckDBPyConnection:
    """Four carts in the store and the lake, and version 1 of ``names`` built over them."""
    _append(store_dsn, *[(f"old-{i}", [_opened(i), _item("p1")]) for i in range(4)])
    con = open_lake(lake_config)
    ingest(con, source)
    for name in names:
        rebuild(con, registry, name, 1)
    return con


def test_remembered_streams_spare_lake_reads_and_give_what_a_rebuild_gives(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    registry, names = discover(bundled=True, folder=None), ["cart_summary", "product_sales"]
    con = _lake_of_old_carts(lake_config, source, store_dsn, registry, names)
    memory, cache = StreamMemory(limit=12), StreamKeysCache()

    def cycle(*carts: tuple[str, list[NewEvent]]) -> int:
        _append(store_dsn, *carts)
        ingest(con, source)
        before = memory.reads
        assert {r.name for r in project(con, registry, names=names, cache=cache, memory=memory)} == set(names)
        return memory.reads - before

    # The first cycle learns the lake's streams (one scan of their ids); new carts then read nothing earlier.
    cycle(("new-0", [_opened(10), _item("p2")]))
    assert cycle(("new-1", [_opened(11), _item("p2")]), ("new-2", [_opened(12)])) == 0
    assert memory.held == 0  # only new streams: what memory holds is not even scanned
    # A stream touched lately is held: its earlier events come from memory.
    assert cycle(("new-1", [_item("p3", 2), NewEvent("CartConfirmed", {})])) == 0
    assert memory.held == 1
    # A stream known from before, not held: its earlier events are read from the lake.
    assert cycle(("old-2", [_item("p2"), NewEvent("CartConfirmed", {})])) == 1
    # More than `limit` events held: the streams touched longest ago are dropped, and read again when touched.
    for i in range(3, 8):
        cycle((f"new-{i}", [_opened(20 + i), _item("p1"), _item("p2"), NewEvent("CartConfirmed", {})]))
    assert cycle(("new-1", [NewEvent("CartCancelled", {})])) == 1
    # Another connection (follow reconnecting after an outage): memory starts again, nothing stale is used.
    con.close()
    con = open_lake(lake_config)
    cycle(("old-3", [NewEvent("CartConfirmed", {})]))
    assert cycle(("old-3", [_item("p1")])) == 0

    followed = {n: con.execute(f"SELECT * FROM projections.{n}_v1 ORDER BY ALL").fetchall() for n in names}
    for name in names:
        rebuild(con, registry, name, 1)
        assert con.execute(f"SELECT * FROM projections.{name}_v1 ORDER BY ALL").fetchall() == followed[name]
    assert any(row[2] == "cancelled" for row in followed["cart_summary"] if row[0] == "new-1")


def test_a_cycle_reads_its_new_events_from_the_staged_batch_and_gives_what_a_rebuild_gives(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    """follow's path: ingest(stage=True), then project(until=, staged=) reads the batch from memory, not the lake."""
    from warehouse.ingest import drop_staged

    registry, names = discover(bundled=True, folder=None), ["cart_summary", "product_sales"]
    con = _lake_of_old_carts(lake_config, source, store_dsn, registry, names)
    memory, cache = StreamMemory(), StreamKeysCache()

    def cycle(*carts: tuple[str, list[NewEvent]], batch_size: int = 500_000) -> None:
        _append(store_dsn, *carts)
        landed = ingest(con, source, stage=True, batch_size=batch_size)
        try:
            project(
                con, registry, names=names, cache=cache, memory=memory, until=landed.checkpoint, staged=landed.staged
            )
        finally:
            drop_staged(con, landed.staged)

    cycle(("new-0", [_opened(10), _item("p2")]))  # the first learns the lake's streams: from the lake
    assert memory.staged == 0
    cycle(("new-1", [_opened(11), _item("p2")]), ("old-1", [_item("p3", 2), NewEvent("CartConfirmed", {})]))
    cycle(("new-0", [NewEvent("CartConfirmed", {})]))
    assert memory.staged == 2
    # Two batches in one ingest: the staged one is only the last, so the cycle reads its range from the lake.
    cycle(("new-2", [_opened(12), _item("p1")]), ("new-3", [_opened(13), _item("p2")]), batch_size=2)
    assert memory.staged == 2
    cycle(("new-3", [NewEvent("CartCancelled", {})]))
    assert memory.staged == 3

    followed = {n: con.execute(f"SELECT * FROM projections.{n}_v1 ORDER BY ALL").fetchall() for n in names}
    for name in names:
        rebuild(con, registry, name, 1)
        assert con.execute(f"SELECT * FROM projections.{name}_v1 ORDER BY ALL").fetchall() == followed[name]
    assert {row[0]: row[2] for row in followed["cart_summary"]}["new-3"] == "cancelled"
    con.close()
