"""Stores under test for the adapter contract: each appends the store's own way."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from eventstore.adapters import EmmettAdapter, EventsourcingAdapter, MartenAdapter, NativeAdapter
from eventstore.adapters.writers import emmett_append, marten_append
from eventstore.connection import connect
from eventstore.native_store import NewEvent, append


class _Readers:
    """A store under test: its DSN, the readers it handed out (closed at the end), plain appends."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._readers: list[Any] = []

    def append(self, conn: psycopg.Connection[Any], stream_id: str, count: int) -> list[str]:
        return self.append_versioned(conn, stream_id, "Happened", [1] * count)

    def append_versioned(
        self, conn: psycopg.Connection[Any], stream_id: str, event_type: str, versions: list[int]
    ) -> list[str]:
        raise NotImplementedError

    def writer(self) -> psycopg.Connection[Any]:
        return connect(self.dsn)

    def keep(self, reader: Any) -> Any:
        self._readers.append(reader)
        return reader

    def close(self) -> None:
        for reader in self._readers:
            reader.close()


class NativeAdapterStore(_Readers):
    def append_versioned(
        self, conn: psycopg.Connection[Any], stream_id: str, event_type: str, versions: list[int]
    ) -> list[str]:
        events = [NewEvent(event_type, {"n": n}, event_version=v) for n, v in enumerate(versions)]
        conn.execute("SELECT 1")
        append(conn, stream_id, "test", events)
        return [str(e.event_id) for e in events]

    def append_undecodable(self, conn: psycopg.Connection[Any], stream_id: str) -> str | None:
        return None

    def reader(self) -> NativeAdapter:
        return self.keep(NativeAdapter(self.dsn))  # type: ignore[no-any-return]


class EmmettStore(_Readers):
    def append_versioned(
        self, conn: psycopg.Connection[Any], stream_id: str, event_type: str, versions: list[int]
    ) -> list[str]:
        events = [{"type": event_type, "data": {"n": n}, "schemaVersion": v} for n, v in enumerate(versions)]
        return emmett_append(conn, stream_id, events)

    def append_undecodable(self, conn: psycopg.Connection[Any], stream_id: str) -> str | None:
        # Emmett's function takes any jsonb; a payload that is not an object is not an event body.
        return emmett_append(conn, stream_id, [{"type": "Odd", "data": [1, 2, 3]}])[0]

    def reader(self) -> EmmettAdapter:
        return self.keep(EmmettAdapter(self.dsn))  # type: ignore[no-any-return]


def marten_stream(stream_id: str) -> uuid.UUID:
    """Marten streams here use guid identity: a stable guid per test stream name."""
    return uuid.uuid5(uuid.NAMESPACE_OID, stream_id)


class MartenStore(_Readers):
    def append_versioned(
        self, conn: psycopg.Connection[Any], stream_id: str, event_type: str, versions: list[int]
    ) -> list[str]:
        events = [NewEvent(event_type, {"n": n}, event_version=v) for n, v in enumerate(versions)]
        marten_append(conn, marten_stream(stream_id), "test", events)
        return [str(e.event_id) for e in events]

    def append_undecodable(self, conn: psycopg.Connection[Any], stream_id: str) -> str | None:
        # Marten's binary serializer: bdata holds the bytes, data the '{}' placeholder.
        event = NewEvent("Packed", {})
        marten_append(conn, marten_stream(stream_id), "test", [event])
        conn.execute("UPDATE mt_events SET bdata = %s WHERE id = %s", (b"\x92\x01\x02", event.event_id))
        return str(event.event_id)

    def reader(self) -> MartenAdapter:
        return self.keep(MartenAdapter(self.dsn))  # type: ignore[no-any-return]


def eventsourcing_reader(dsn: str, table: str = "shop_events") -> EventsourcingAdapter:
    return EventsourcingAdapter(dsn, "public", table)
