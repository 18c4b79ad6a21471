"""The native store's reader against the shared reader contract, plus its own details."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from eventstore.connection import connect
from eventstore.native import NewEvent, append
from eventstore.reader import EVENT_SCHEMA, NativeReader
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
