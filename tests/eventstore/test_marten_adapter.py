"""Marten's tables (created as Marten's source defines them) read through the adapter."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from eventstore.adapters import ADAPTER_SCHEMA, MartenAdapter
from eventstore.adapters.writers import append_demo_shop_marten, create_marten_schema, marten_append
from eventstore.connection import connect
from eventstore.demo import generate_carts
from eventstore.errors import ConfigurationError
from eventstore.native_store import NewEvent
from tests.eventstore.adapters_support import MartenStore, marten_stream
from tests.eventstore.contract import ReaderContract, read_all


@pytest.fixture()
def marten_dsn(fresh_database: str) -> str:
    with connect(fresh_database) as conn:
        create_marten_schema(conn)
    return fresh_database


class TestMartenAdapter(ReaderContract):
    @pytest.fixture()
    def store(self, marten_dsn: str) -> Iterator[MartenStore]:  # type: ignore[override]
        store = MartenStore(marten_dsn)
        yield store
        store.close()

    def test_batches_map_marten_columns(self, store: MartenStore) -> None:
        event = NewEvent(
            "ItemAdded",
            {"product_id": "SKU-1", "unit_price": 12.5},
            event_version=2,
            metadata={"correlation_id": "corr-1", "causation_id": "cause-1", "user": "ann"},
        )
        with store.writer() as conn:
            [position] = marten_append(conn, marten_stream("cart-1"), "cart", [event])
            conn.commit()
        [row] = [r for b in store.reader().read() for r in b.to_pylist()]
        assert list(row) == ADAPTER_SCHEMA.names
        assert row["global_position"] == position and row["transaction_id"] == 0
        stream = str(marten_stream("cart-1"))
        assert (row["stream_id"], row["stream_type"], row["stream_version"]) == (stream, "cart", 1)
        assert (row["event_id"], row["event_type"], row["event_version"]) == (str(event.event_id), "item_added", 2)
        assert json.loads(row["data"]) == {"product_id": "SKU-1", "unit_price": 12.5}
        meta = json.loads(row["metadata"])
        assert meta["correlation_id"] == "corr-1" and meta["causation_id"] == "cause-1" and meta["user"] == "ann"
        assert meta["dotnet_type"].startswith("Shop.Events.ItemAdded")
        assert (row["is_archived"], row["tenant_id"]) == (False, None)

    def test_archived_events_are_read_and_flagged_once(self, store: MartenStore) -> None:
        kept = self.commit_events(store, "kept", 1)
        archived = self.commit_events(store, "old", 2)
        reader = store.reader()
        _, checkpoint = read_all(reader)
        # Marten's mt_archive_stream: flip the flag on the stream and its events.
        with store.writer() as conn:
            conn.execute("UPDATE mt_streams SET is_archived = true WHERE id = %s", (marten_stream("old"),))
            conn.execute("UPDATE mt_events SET is_archived = true WHERE stream_id = %s", (marten_stream("old"),))
            conn.commit()
        assert read_all(reader, checkpoint)[0] == [], "archiving must not make events new again"
        rows = {r["event_id"]: r for b in store.reader().read() for r in b.to_pylist()}
        assert [rows[i]["is_archived"] for i in archived] == [True, True]
        assert rows[kept[0]]["is_archived"] is False

    def test_held_transaction_with_a_new_reader_each_time(self, store: MartenStore) -> None:
        """A fresh reader (a new ingest process) has no remembered candidates: contiguity still gets it there."""
        before = self.commit_events(store, "early", 2)
        slow = store.writer()
        held = store.append(slow, "slow", 2)
        after = self.commit_events(store, "late", 2)
        first, checkpoint = read_all(store.reader())
        assert first == before
        slow.commit()
        slow.close()
        rest, _ = read_all(store.reader(), checkpoint)
        assert rest == held + after

    def test_rolled_back_hole_is_passed_once_its_writer_has_ended(self, store: MartenStore) -> None:
        """A hole left by a rollback is skipped on proof (its writer gone), never on a timer."""
        self.commit_events(store, "a", 1)
        doomed = store.writer()
        store.append(doomed, "doomed", 2)
        doomed.rollback()  # positions 2 and 3 will never exist
        doomed.close()
        busy = store.writer()
        store.append(busy, "busy", 1)  # in flight: the reader cannot use "nobody in flight"
        kept = self.commit_events(store, "b", 1)
        reader = store.reader()
        ids, checkpoint = read_all(reader)
        assert len(ids) == 1, "a hole must not be passed while a writer that may own it is in flight"
        # The candidate taken at that head names `busy`; once it ends the reader may pass.
        busy.commit()
        busy.close()
        rest, _ = read_all(reader, checkpoint)
        assert kept[0] in rest

    def test_demo_shop_through_faithful_sql(self, fresh_database: str) -> None:
        result = append_demo_shop_marten(fresh_database, events=150, seed=3)
        with MartenAdapter(fresh_database) as reader:
            rows = [r for b in reader.read() for r in b.to_pylist()]
        assert len(rows) == result.events
        expected = {
            (str(uuid.UUID(c.stream_id.removeprefix("cart-"))), n + 1, e.event_version)
            for c in generate_carts(150, 3)
            for n, e in enumerate(c.events)
        }
        assert {(r["stream_id"], r["stream_version"], r["event_version"]) for r in rows} == expected
        assert [r["global_position"] for r in rows] == sorted(r["global_position"] for r in rows)


def test_cached_sequence_is_refused(marten_dsn: str) -> None:
    with connect(marten_dsn, autocommit=True) as conn:
        conn.execute("ALTER SEQUENCE mt_events_sequence CACHE 20")
    with pytest.raises(ConfigurationError, match="CACHE 20"):
        MartenAdapter(marten_dsn)


def test_missing_tables_name_what_is_there(store_dsn: str) -> None:
    from eventstore.adapters import open_reader
    from eventstore.settings import Settings

    settings = Settings.from_env({"PROJECTIONIST_EVENT_STORE_KIND": "marten"})
    with pytest.raises(ConfigurationError, match=r"expects table public\.mt_events.*public\.events \(native\)"):
        open_reader(settings, store_dsn)


def test_checkpoint_of_another_kind_is_refused(marten_dsn: str) -> None:
    from eventstore.positions import Checkpoint

    with MartenAdapter(marten_dsn) as reader, pytest.raises(ConfigurationError, match="not written by the marten"):
        reader.query(Checkpoint(812, 3), 10)
