"""Event sources for the ingest, one per store kind, chosen by ``PROJECTIONIST_EVENT_STORE_KIND``.

:func:`open_source` is what ``projectionist ingest``, ``status`` and ``demo`` (and the Dagster
jobs) call. ``native`` gets :class:`~warehouse.ingest.NativeSource`; Marten, Emmett and
``eventsourcing`` get :class:`AdapterSource`, one wrapper over any
:class:`~eventstore.adapters.EventStoreAdapter`.

Checkpoints. The lake's checkpoint is the adapter's own: ``(transaction_id, global_position)``
for the stores ordered by transaction snapshot (native, Emmett), ``(0, position)`` for those
proven by a high-water mark (Marten's ``seq_id``, ``eventsourcing``'s ``notification_id``). The
bound handed to each batch is the adapter's: a transaction id for the former, a proven position
for the latter. A high-water mark builds on positions already settled, so the source asks the
adapter's head *from the lake's checkpoint* (``head(after)``): everything at or below it is in
the lake, hence committed, and the proof only has to cover what lies above.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from eventstore.adapters import EventStoreAdapter, open_reader
from eventstore.connection import connect_read_only
from eventstore.identity import StoreIdentity, read_identity
from eventstore.positions import START, Checkpoint, Head, Holder, open_transaction
from eventstore.reader import NativeReader
from eventstore.settings import Settings
from warehouse.ingest import EventSource, NativeSource, attach_store

__all__ = ["AdapterSource", "close_source", "head_holder", "open_source", "source_name"]

#: A bound above every transaction id and position: ``pending`` counts settled and in-flight events.
_UNBOUNDED = 2**62


def _schema_table(adapter: EventStoreAdapter) -> tuple[str, str]:
    schema = str(getattr(adapter, "schema", "public"))
    table = {"marten": "mt_events", "emmett": "emt_messages"}.get(adapter.kind) or str(getattr(adapter, "table", ""))
    return schema, table


def source_name(adapter: EventStoreAdapter) -> str:
    """``<kind>:<schema>.<table>``, the value of ``raw.events.source`` for ``adapter``'s events."""
    schema, table = _schema_table(adapter)
    return f"{adapter.kind}:{schema}.{table}"


@dataclass
class AdapterSource:
    """Any :class:`EventStoreAdapter` as an ingest source: its DuckDB SQL runs inside the lake connection."""

    adapter: EventStoreAdapter
    _identity: StoreIdentity | None = None

    @property
    def name(self) -> str:
        return source_name(self.adapter)

    def identity(self) -> StoreIdentity:
        if self._identity is None:
            self._identity = read_identity(self.adapter.dsn, self.adapter.kind, *_schema_table(self.adapter))
        return self._identity

    @property
    def bound_kind(self) -> str:
        """``transaction_id`` or ``position``: what the bound of :meth:`batch_sql` is."""
        return self.adapter.bound_kind

    def head(self, after: Checkpoint = START) -> Head:
        return self.adapter.head(after)

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        attach_store(con, self.adapter.dsn)

    def pending(self, after: Checkpoint) -> tuple[int, datetime | None]:
        # The adapter's own query (bound: no limit) over everything after the checkpoint, counted in PostgreSQL.
        query = self.adapter.query(after, _UNBOUNDED)
        with connect_read_only(self.adapter.dsn) as conn:
            if self.adapter.kind == "eventsourcing":
                # Its query leaves decoding (and recorded_at) to DuckDB: count rows, age from the lake's view.
                row = conn.execute(f"SELECT count(*), NULL::timestamptz FROM ({query}) AS q").fetchone()
            else:
                row = conn.execute(f"SELECT count(*), min(q.recorded_at) FROM ({query}) AS q").fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def batch_sql(self, after: Checkpoint, bound: int, limit: int | None) -> str:
        return self.adapter.ingest_sql(after, bound, limit)

    def close(self) -> None:
        """Release the adapter's connections."""
        self.adapter.close()


def open_source(settings: Settings, dsn: str) -> EventSource:
    """The ingest source for ``settings.store_kind`` at ``dsn`` (its tables checked first)."""
    if settings.store_kind == "native":
        open_reader(settings, dsn).close()  # the native table check and its clear error
        return NativeSource(NativeReader(dsn, settings.store_schema, settings.store_table))
    return AdapterSource(open_reader(settings, dsn))


def close_source(source: EventSource) -> None:
    """Release whatever connections ``source`` holds."""
    if isinstance(source, NativeSource):
        source.reader.close()
    elif isinstance(source, AdapterSource):
        source.close()


def head_holder(source: EventSource, head: Head) -> Holder | None:
    """The open transaction holding ``head`` back (events wait above it), if the reading role can see it.

    Where the bound is a transaction id (native, Emmett) it is exactly the transaction with that
    id; where it is a high-water mark (Marten, ``eventsourcing``), the oldest open writing transaction.
    """
    if not head.events_pending:
        return None
    if isinstance(source, NativeSource):
        return open_transaction(source.reader.dsn, head.bound)
    if isinstance(source, AdapterSource):
        bound = head.bound if source.bound_kind == "transaction_id" else None
        return open_transaction(source.adapter.dsn, bound)
    return None
