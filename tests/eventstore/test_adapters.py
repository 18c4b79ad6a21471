"""The adapter protocol: the factory, configuration errors, the native adapter, DuckDB-side SQL."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest

from eventstore.adapters import (
    ADAPTER_SCHEMA,
    EventsourcingAdapter,
    MartenAdapter,
    NativeAdapter,
    detect_stores,
    open_reader,
)
from eventstore.adapters.eventsourcing_shop import Cart, Shop, postgres_env
from eventstore.adapters.writers import EMMETT_WRITER_DIR, create_marten_schema, run_emmett_writer
from eventstore.connection import connect
from eventstore.errors import ConfigurationError
from eventstore.positions import EVENT_SCHEMA, START
from eventstore.settings import Settings
from tests.eventstore.adapters_support import EmmettStore, MartenStore, NativeAdapterStore
from tests.eventstore.contract import ReaderContract

needs_node = pytest.mark.skipif(
    not (EMMETT_WRITER_DIR / "node_modules").exists(), reason=f"npm ci --prefix {EMMETT_WRITER_DIR} first"
)


def settings(kind: str, **env: str) -> Settings:
    return Settings.from_env({"PROJECTIONIST_EVENT_STORE_KIND": kind, **env})


class TestNativeAdapter(ReaderContract):
    @pytest.fixture()
    def store(self, store_dsn: str) -> Iterator[NativeAdapterStore]:  # type: ignore[override]
        store = NativeAdapterStore(store_dsn)
        yield store
        store.close()

    def test_batches_carry_the_adapter_columns(self, store: NativeAdapterStore) -> None:
        self.commit_events(store, "s-1", 2)
        [batch] = list(store.reader().read())
        assert batch.schema == ADAPTER_SCHEMA
        assert batch.schema.remove(12).remove(11) == EVENT_SCHEMA
        assert batch.column("is_archived").to_pylist() == [False, False]
        assert batch.column("tenant_id").null_count == 2


def test_adapter_schema_is_the_event_schema_plus_two_columns() -> None:
    assert ADAPTER_SCHEMA.names == [*EVENT_SCHEMA.names, "is_archived", "tenant_id"]
    assert ADAPTER_SCHEMA.field("is_archived").type == pa.bool_()
    assert ADAPTER_SCHEMA.field("tenant_id").type == pa.string()


def test_factory_picks_the_configured_adapter(store_dsn: str) -> None:
    with connect(store_dsn) as conn:
        create_marten_schema(conn, "marten")
    Shop(env=postgres_env(store_dsn)).close()
    native = open_reader(settings("native"), store_dsn)
    marten = open_reader(settings("marten", PROJECTIONIST_EVENT_STORE_SCHEMA="marten"), store_dsn)
    lib = open_reader(settings("eventsourcing", PROJECTIONIST_EVENT_STORE_TABLE="shop_events"), store_dsn)
    assert isinstance(native, NativeAdapter) and native.gap_safety == "transaction-snapshot"
    assert isinstance(marten, MartenAdapter) and marten.gap_safety == "sequence-high-water-mark"
    assert isinstance(lib, EventsourcingAdapter) and lib.gap_safety == "table-lock"
    for reader in (native, marten, lib):
        reader.close()
    kinds = {(s.kind, s.schema, s.table) for s in detect_stores(store_dsn)}
    assert kinds == {
        ("native", "public", "events"),
        ("marten", "marten", "mt_events"),
        ("eventsourcing", "public", "shop_events"),
    }


def test_kind_that_does_not_match_the_tables_says_what_is_there(store_dsn: str) -> None:
    with pytest.raises(ConfigurationError) as marten:
        open_reader(settings("marten"), store_dsn)
    assert "expects table public.mt_events" in str(marten.value)
    assert "public.events (native)" in str(marten.value)
    with pytest.raises(ConfigurationError, match=r"expects table public\.emt_messages.*public\.events \(native\)"):
        open_reader(settings("emmett"), store_dsn)


def test_native_kind_on_a_marten_database_names_marten(fresh_database: str) -> None:
    with connect(fresh_database) as conn:
        create_marten_schema(conn)
    with pytest.raises(ConfigurationError, match=r"native event table public\.events.*public\.mt_events \(marten\)"):
        open_reader(settings("native"), fresh_database)


def test_empty_database_says_no_store_is_there(fresh_database: str) -> None:
    with pytest.raises(ConfigurationError, match="No event table of a known kind"):
        open_reader(settings("eventsourcing"), fresh_database)


def test_a_table_of_the_wrong_shape_names_its_columns(fresh_database: str) -> None:
    with connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE mt_events (seq_id bigint, id text, mt_dotnet_type text)")
        conn.execute("CREATE TABLE mt_streams (id uuid)")
    with pytest.raises(ConfigurationError, match=r"not a marten event table: id \(uuid expected, text found\)"):
        MartenAdapter(fresh_database)


def _fill(kind: str, dsn: str) -> None:
    if kind == "native":
        store = NativeAdapterStore(dsn)
    elif kind == "marten":
        with connect(dsn) as conn:
            create_marten_schema(conn)
        store = MartenStore(dsn)  # type: ignore[assignment]
    elif kind == "emmett":
        run_emmett_writer(dsn, [])
        store = EmmettStore(dsn)  # type: ignore[assignment]
    else:
        shop = Shop(env=postgres_env(dsn))
        for n in range(3):
            cart = Cart._create(Cart.CartOpened, customer_id=f"c{n}", correlation_id="k", causation_id="k")
            cart.record("ItemAdded", 1 + n % 2, {"product_id": "p", "quantity": 1, "unit_price": 1.0}, {})
            shop.save(cart)
        shop.close()
        return
    for n in range(3):
        with store.writer() as conn:
            store.append_versioned(conn, f"cart-{n}", "ItemAdded", [1, 2])
            conn.commit()


@pytest.mark.parametrize("kind", ["native", "marten", pytest.param("emmett", marks=needs_node), "eventsourcing"])
def test_duckdb_relation_sql_returns_what_read_returns(kind: str, store_dsn: str) -> None:
    """The ingest's path: the per-batch SQL runs inside DuckDB; keyset batches join up to read()."""
    _fill(kind, store_dsn)
    reader = open_reader(settings(kind), store_dsn)
    try:
        head = reader.head(START)
        everything = pa.Table.from_batches(list(reader.read(START, until=head)), ADAPTER_SCHEMA)
        assert everything.num_rows == 6
        con = reader.duckdb()
        pieces = []
        after = START
        while True:
            batch = con.sql(reader.duckdb_relation_sql(after, head.bound, 4)).arrow()
            table = batch.read_all() if hasattr(batch, "read_all") else batch
            if table.num_rows == 0:
                break
            extra = set(table.column_names) - set(ADAPTER_SCHEMA.names)
            # An adapter may add the ids it has at hand (the ingest then skips parsing metadata);
            # they must say what metadata says.
            assert extra <= {"correlation_id", "causation_id"}
            for name in extra:
                from_metadata = [json.loads(m).get(name) for m in table.column("metadata").to_pylist()]
                assert table.column(name).to_pylist() == from_metadata
            table = table.select(ADAPTER_SCHEMA.names).cast(ADAPTER_SCHEMA)
            pieces.append(table)
            last = table.num_rows - 1
            after = type(after)(
                int(table.column("transaction_id")[last].as_py()), int(table.column("global_position")[last].as_py())
            )
        assert pa.concat_tables(pieces).to_pylist() == everything.to_pylist()
        # The ingest's variant: the same rows, in whatever order DuckDB finishes them.
        unordered = con.sql(reader.ingest_sql(START, head.bound, None)).arrow()
        unordered = unordered.read_all() if hasattr(unordered, "read_all") else unordered
        rows = unordered.select(ADAPTER_SCHEMA.names).cast(ADAPTER_SCHEMA).to_pylist()
        assert sorted(rows, key=lambda r: r["global_position"]) == everything.to_pylist()
    finally:
        reader.close()
