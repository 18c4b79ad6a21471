"""Ingest from every store kind: the demo shop through each store's own writer, into a fresh lake.

The lake must equal the store (ids, counts, checkpoint), and ``cart_summary`` v1 over the lake
must give the native store's rows for the same seed — up to what the stores force: Marten
stores snake_case type aliases (``cart_opened``) and streams without the ``cart-`` prefix, and
``eventsourcing`` streams are the aggregate's UUID, so the comparison maps those first.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from eventstore.adapters import open_reader, store_kinds
from eventstore.adapters.writers import EMMETT_WRITER_DIR, append_demo_shop_store
from eventstore.connection import connect, ensure_database
from eventstore.demo import append_demo_shop
from eventstore.errors import ConfigurationError
from eventstore.native_store import create_schema
from eventstore.positions import Checkpoint
from eventstore.settings import Settings
from projections import compute, discover
from warehouse import versions
from warehouse.errors import LakeConfigurationError
from warehouse.ingest import INGEST_DEAD_LETTER, EventSource, ingest, lake_checkpoint
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource, close_source, open_source

needs_node = pytest.mark.skipif(
    not (EMMETT_WRITER_DIR / "node_modules").exists(), reason=f"npm ci --prefix {EMMETT_WRITER_DIR} first"
)
#: Every registered kind (Emmett's writer needs Node.js packages).
KINDS = [pytest.param(kind, marks=needs_node) if kind == "emmett" else kind for kind in store_kinds()]
FOREIGN = [param for param, kind in zip(KINDS, store_kinds(), strict=True) if kind != "native"]
EVENTS = 600
SEED = 11
#: The columns every store must agree on (opened_at/last_event_at are the writers' clocks).
COMPARED = {
    1: ["cart_id", "customer_id", "status", "item_quantity", "total_amount"],
    2: ["cart_id", "customer_id", "status", "item_quantity", "total_amount", "currency", "distinct_products"],
}


def settings(kind: str) -> Settings:
    return Settings.from_env({"PROJECTIONIST_EVENT_STORE_KIND": kind})


def append_shop(kind: str, dsn: str, events: int = EVENTS, seed: int = SEED) -> int:
    """Append the demo shop through ``kind``'s own writer; return the events appended."""
    if kind == "native":
        with connect(dsn) as conn:
            create_schema(conn)
        return append_demo_shop(dsn, events=events, writers=2, seed=seed, hold_seconds=0).events
    return append_demo_shop_store(kind, dsn, events=events, seed=seed).events


@pytest.fixture()
def source_of() -> Iterator[list[EventSource]]:
    opened: list[EventSource] = []
    yield opened
    for source in opened:
        close_source(source)


def opened(kind: str, dsn: str, keep: list[EventSource]) -> EventSource:
    source = open_source(settings(kind), dsn)
    keep.append(source)
    return source


def store_ids(kind: str, dsn: str) -> list[str]:
    """Event ids in the store's checkpoint order, read through its adapter."""
    with open_reader(settings(kind), dsn) as reader:  # type: ignore[attr-defined]
        return [str(i) for b in reader.read() for i in b.column("event_id").to_pylist()]


def lake_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT event_id FROM raw.events ORDER BY transaction_id, global_position").fetchall()
    return [str(r[0]) for r in rows]


def pascal(alias: str) -> str:
    return "".join(part.capitalize() for part in alias.split("_"))


def comparable_events(con: duckdb.DuckDBPyConnection, kind: str) -> str:
    """raw.all_events with the differences the store forces mapped away (a view name)."""
    con.create_function("pascal_case", pascal, ["VARCHAR"], "VARCHAR")  # type: ignore[arg-type]
    event_type = "pascal_case(event_type)" if kind == "marten" else "event_type"
    stream_id = "CASE WHEN stream_id LIKE 'cart-%' THEN stream_id ELSE 'cart-' || stream_id END"
    con.execute(
        f"CREATE TEMP VIEW comparable AS SELECT * REPLACE ({stream_id} AS stream_id, {event_type} AS event_type) "
        "FROM raw.all_events"
    )
    return "comparable"


def cart_rows(con: duckdb.DuckDBPyConnection, kind: str) -> dict[int, list[tuple[object, ...]]]:
    """cart_summary v1 and v2 over the lake's events: the compared columns, by cart."""
    registry = discover()
    events = comparable_events(con, kind)
    found = {}
    for version, columns in COMPARED.items():
        result = compute(con, registry.get("cart_summary", version), events, upcasters=registry.upcasters)
        assert result.poison == ()
        table: pa.Table = result.rows.select(columns).sort_by("cart_id")
        found[version] = [tuple(row.values()) for row in table.to_pylist()]
    return found


@pytest.fixture(scope="module")
def native_carts(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[tuple[object, ...]]]:
    """cart_summary v1 of the native store holding the demo shop of SEED."""
    names = (f"t_{uuid.uuid4().hex[:12]}", f"t_{uuid.uuid4().hex[:12]}")
    dsn, lake_dsn = (ensure_database(pg_server, name) for name in names)
    try:
        append_shop("native", dsn)
        config = LakeConfig("postgres", lake_dsn, str(tmp_path_factory.mktemp("native-lake")) + "/")
        source = open_source(settings("native"), dsn)
        con = open_lake(config)
        try:
            ingest(con, source)
            carts = cart_rows(con, "native")
            currencies = {row[5] for row in carts[2]}
            assert len(carts[1]) > 100 and {"EUR", "USD"} <= currencies  # both ItemAdded versions are there
            return carts
        finally:
            con.close()
            close_source(source)
    finally:
        with connect(pg_server, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize("kind", KINDS)
def test_the_lake_equals_the_store_and_cart_summary_matches_native(
    kind: str,
    fresh_database: str,
    lake_config: LakeConfig,
    source_of: list[EventSource],
    native_carts: dict[int, list[tuple[object, ...]]],
) -> None:
    appended = append_shop(kind, fresh_database)
    source = opened(kind, fresh_database, source_of)
    con = open_lake(lake_config)
    try:
        result = ingest(con, source, batch_size=250)
        expected = store_ids(kind, fresh_database)
        assert result.events == appended == len(expected)
        assert result.batches >= 2
        assert lake_ids(con) == expected
        checkpoint, events = lake_checkpoint(con)
        assert events == appended and checkpoint == result.head.last
        sources = con.execute("SELECT DISTINCT source FROM raw.events").fetchall()
        assert sources == [(source.name,)]
        assert re.fullmatch(rf"{kind}:public\.\w+", source.name)
        flags = con.execute("SELECT bool_or(is_archived), count(tenant_id), count(*) - count(data) FROM raw.events")
        assert flags.fetchone() == (False, 0, 0)
        assert cart_rows(con, kind) == native_carts
    finally:
        con.close()


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoints_are_the_adapters_own_and_a_second_ingest_takes_only_new_events(
    kind: str, fresh_database: str, lake_config: LakeConfig, source_of: list[EventSource]
) -> None:
    first = append_shop(kind, fresh_database, events=120, seed=1)
    source = opened(kind, fresh_database, source_of)
    con = open_lake(lake_config)
    try:
        ingest(con, source, batch_size=50)
        after_first, _ = lake_checkpoint(con)
        by_position = isinstance(source, StoreSource) and source.bound_kind == "position"
        if by_position:  # Marten, eventsourcing: (0, position), the store's own order
            assert after_first == Checkpoint(0, first)
        else:  # native, Emmett: (transaction id, position)
            assert after_first.transaction_id > 0
        second = append_shop(kind, fresh_database, events=120, seed=2)
        again = ingest(con, source, batch_size=50)
        assert again.events == second
        assert lake_ids(con) == store_ids(kind, fresh_database)
        assert lake_checkpoint(con) == (again.head.last, first + second)
        assert ingest(con, source).events == 0
    finally:
        con.close()


#: Each store's way of holding an event it cannot hand out as JSON, made at position ``{pos}``.
SPOIL = {
    "marten": "UPDATE mt_events SET bdata = '\\x9201'::bytea WHERE seq_id = {pos}",
    "emmett": "UPDATE emt_messages SET message_data = '[1, 2, 3]'::jsonb WHERE global_position = {pos}",
    "eventsourcing": "UPDATE shop_events SET state = '\\x8f00fe11'::bytea WHERE notification_id = {pos}",
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_undecodable_events_land_with_data_null_and_are_dead_lettered(
    kind: str, fresh_database: str, lake_config: LakeConfig, source_of: list[EventSource]
) -> None:
    appended = append_shop(kind, fresh_database, events=80)
    with open_reader(settings(kind), fresh_database) as reader:  # type: ignore[attr-defined]
        positions = [p for b in reader.read() for p in b.column("global_position").to_pylist()]
    spoiled = positions[len(positions) // 2]
    with connect(fresh_database) as conn:
        conn.execute(SPOIL[kind].format(pos=int(spoiled)))
    source = opened(kind, fresh_database, source_of)
    con = open_lake(lake_config)
    try:
        result = ingest(con, source, batch_size=30)
        assert result.events == appended  # nothing stopped, nothing dropped
        bad = con.execute(
            "SELECT event_id, json_extract_string(metadata, '$.decode_error') FROM raw.events WHERE data IS NULL"
        ).fetchall()
        assert len(bad) == 1 and bad[0][1]
        letters = con.execute(
            "SELECT event_id, global_position, projection, version, reason, dead_lettered_at IS NOT NULL "
            "FROM meta.dead_letters"
        ).fetchall()
        assert letters == [(bad[0][0], spoiled, INGEST_DEAD_LETTER, None, bad[0][1], True)]
        assert lake_checkpoint(con)[0] == result.head.last
        assert ingest(con, source).events == 0
        assert con.execute("SELECT count(*) FROM meta.dead_letters").fetchone() == (1,)
        # Regression: ingest and the projection versions share meta.dead_letters; whichever creates
        # it first, both must read and write it (they once disagreed on a column name).
        listed = versions.dead_letters(con)
        assert [(d.event_id, d.projection) for d in listed] == [(bad[0][0], INGEST_DEAD_LETTER)]
    finally:
        con.close()


def test_a_lake_holds_one_store(fresh_database: str, lake_config: LakeConfig, source_of: list[EventSource]) -> None:
    append_shop("marten", fresh_database, events=40)
    append_shop("eventsourcing", fresh_database, events=40)  # another store's tables in the same database
    con = open_lake(lake_config)
    try:
        ingest(con, opened("marten", fresh_database, source_of))
        with pytest.raises(
            LakeConfigurationError, match=r"events of marten:public\.mt_events .*, not of eventsourcing:"
        ):
            ingest(con, opened("eventsourcing", fresh_database, source_of))
    finally:
        con.close()


def test_open_source_names_the_missing_tables(store_dsn: str) -> None:
    with pytest.raises(ConfigurationError, match=r"public\.mt_events"):
        open_source(settings("marten"), store_dsn)
    with pytest.raises(ConfigurationError, match="eventsourcing"):
        open_source(settings("eventsourcing"), store_dsn)
