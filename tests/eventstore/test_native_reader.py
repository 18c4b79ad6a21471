"""The native store's reader against the shared reader contract, plus its own details."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from eventstore.adapters.native import NativeReader
from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.errors import TerminalError
from eventstore.native_store import NewEvent, append
from eventstore.positions import EVENT_SCHEMA, START, Checkpoint, checkpoint_of
from tests.eventstore.contract import ReaderContract, read_all


class NativeStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._readers: list[NativeReader] = []

    def writer(self) -> psycopg.Connection[Any]:
        return connect(self.dsn)

    def append(self, conn: psycopg.Connection[Any], stream_id: str, count: int) -> list[str]:
        events = [NewEvent("Happened", {"n": n}) for n in range(count)]
        conn.execute("SELECT 1")  # open the caller's transaction: append then runs inside it
        append(conn, stream_id, "test", events)
        return [str(e.event_id) for e in events]

    def append_versioned(
        self, conn: psycopg.Connection[Any], stream_id: str, event_type: str, versions: list[int]
    ) -> list[str]:
        events = [NewEvent(event_type, {"n": n}, event_version=v) for n, v in enumerate(versions)]
        conn.execute("SELECT 1")
        append(conn, stream_id, "test", events)
        return [str(e.event_id) for e in events]

    def append_undecodable(self, conn: psycopg.Connection[Any], stream_id: str) -> str | None:
        return None  # data is jsonb checked to be an object at append: nothing undecodable fits

    def reader(self) -> NativeReader:
        reader = NativeReader(self.dsn)
        self._readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


class TestNativeReader(ReaderContract):
    @pytest.fixture()
    def store(self, store_dsn: str) -> Iterator[NativeStore]:  # type: ignore[override]
        store = NativeStore(store_dsn)
        yield store
        store.close()

    def test_batches_carry_the_lake_schema_and_payloads(self, store: NativeStore) -> None:
        with store.writer() as conn:
            event = NewEvent(
                "ItemAdded",
                {"price": 12.34},
                event_version=2,
                metadata={"correlation_id": "c-1"},
                event_id=uuid.uuid4(),
            )
            append(conn, "cart-1", "cart", [event])
            conn.commit()
        batch = next(iter(store.reader().read()))
        assert batch.schema == EVENT_SCHEMA
        row = batch.to_pylist()[0]
        assert row["event_id"] == str(event.event_id)
        assert row["event_version"] == 2
        assert row["stream_version"] == 1
        assert row["data"] == '{"price": 12.34}'
        assert '"correlation_id": "c-1"' in row["metadata"]

    def test_head_orders_transaction_ids_numerically(self, store: NativeStore) -> None:
        # Regression: an unqualified ORDER BY sorted the text of the id ("997" > "1069").
        with store.writer() as conn:
            conn.execute("SELECT pg_current_xact_id()")
            conn.commit()
            for n in range(3):
                store.append(conn, f"s-{n}", 1)
                conn.commit()
                # burn transaction ids so that they cross a power of ten between events
                for _ in range(7 if n == 0 else 0):
                    conn.execute("SELECT pg_current_xact_id()")
                    conn.commit()
        reader = store.reader()
        _, checkpoint = read_all(reader)
        assert reader.head().last == checkpoint

    def test_batch_size_must_be_positive(self, store: NativeStore) -> None:
        with pytest.raises(ValueError, match="batch_size"):
            next(iter(store.reader().read(batch_size=0)))


class TestSlicedNativeReader(ReaderContract):
    """The whole contract again with slices of a few events, so every read spans many backends."""

    @pytest.fixture()
    def store(self, store_dsn: str) -> Iterator[NativeStore]:  # type: ignore[override]
        store = SlicedStore(store_dsn)
        yield store
        store.close()


class SlicedStore(NativeStore):
    def reader(self) -> NativeReader:
        reader = super().reader()
        reader._slice_events = 3
        reader._read_workers = 3
        return reader


def _rows(reader: NativeReader, after: Checkpoint = START, batch_size: int = 7) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in reader.read(after, batch_size=batch_size):
        assert batch.schema == EVENT_SCHEMA
        assert 0 < batch.num_rows <= batch_size
        rows.extend(batch.to_pylist())
    return rows


def _sequential_and_sliced(dsn: str) -> tuple[NativeReader, NativeReader]:
    sequential = NativeReader(dsn)
    sequential._read_workers = 1
    sliced = NativeReader(dsn)
    sliced._slice_events = 10
    sliced._read_workers = 2
    return sequential, sliced


def test_sliced_read_returns_the_sequential_rows_in_the_same_order(store_dsn: str) -> None:
    append_demo_shop(store_dsn, events=800, writers=4, seed=5)  # commits out of position order
    sequential, sliced = _sequential_and_sliced(store_dsn)
    with sequential, sliced:
        expected = _rows(sequential)
        assert len(expected) >= 800
        assert _rows(sliced) == expected
        middle = checkpoint_of(next(iter(sequential.read(batch_size=333))))
        assert _rows(sliced, middle) == _rows(sequential, middle) == expected[333:]


def test_sliced_read_stops_below_a_held_transaction_and_resumes_exactly(store_dsn: str) -> None:
    store = NativeStore(store_dsn)
    for n in range(4):
        TestNativeReader().commit_events(store, f"early-{n}", 9)
    held = store.writer()
    held_ids = store.append(held, "held", 5)
    for n in range(4):
        TestNativeReader().commit_events(store, f"late-{n}", 9)
    sequential, sliced = _sequential_and_sliced(store_dsn)
    with sequential, sliced:
        first = _rows(sliced)
        assert first == _rows(sequential)
        assert [r["stream_id"] for r in first] == [f"early-{n}" for n in range(4) for _ in range(9)]
        assert sliced.head().events_pending
        held.commit()
        held.close()
        after = Checkpoint(first[-1]["transaction_id"], first[-1]["global_position"])
        rest = _rows(sliced, after)
        assert rest == _rows(sequential, after)
        assert sorted(r["event_id"] for r in first + rest) == sorted([r["event_id"] for r in _rows(sequential)])
        assert held_ids == [r["event_id"] for r in rest if r["stream_id"] == "held"]
        assert len(first) + len(rest) == 8 * 9 + 5


def test_abandoning_a_sliced_read_stops_its_workers(store_dsn: str) -> None:
    append_demo_shop(store_dsn, events=300, writers=2, seed=9)
    _, sliced = _sequential_and_sliced(store_dsn)
    with sliced:
        batches = sliced.read(batch_size=5)
        first = next(batches)
        assert first.num_rows == 5
        batches.close()
        assert not [t for t in threading.enumerate() if t.name.startswith("event-reader")]
        assert len(_rows(sliced)) >= 300  # the reader is still usable


def test_sliced_read_refuses_to_continue_when_settled_events_vanish(store_dsn: str) -> None:
    append_demo_shop(store_dsn, events=200, writers=2, seed=11)
    _, sliced = _sequential_and_sliced(store_dsn)
    walk = sliced._slice_starts

    def starts_then_delete(after: Checkpoint, bound: int, size: int) -> Iterator[tuple[Checkpoint, bool]]:
        starts = list(walk(after, bound, size))  # every boundary found first …
        with connect(store_dsn) as conn:  # … then an event inside the third slice disappears
            conn.execute(
                "DELETE FROM events WHERE global_position = (SELECT global_position FROM events "
                "WHERE (transaction_id, global_position) > (%s::xid8, %s) "
                "ORDER BY transaction_id, global_position OFFSET 1 LIMIT 1)",
                (str(starts[2][0].transaction_id), starts[2][0].global_position),
            )
        yield from starts

    sliced._slice_starts = starts_then_delete  # type: ignore[method-assign]
    with sliced, pytest.raises(TerminalError, match="changed during a read"):
        list(sliced.read(batch_size=5))
