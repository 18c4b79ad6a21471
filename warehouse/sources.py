"""The ingest's event source: any store adapter, chosen by ``PROJECTIONIST_EVENT_STORE_KIND``.

:func:`open_source` is what ``projectionist ingest``, ``status``, ``follow`` and ``demo`` (and the
Dagster jobs) call: it opens the configured kind through the adapter registry
(:func:`eventstore.adapters.open_reader`) and wraps it in :class:`StoreSource`, the one
:class:`~warehouse.ingest.EventSource` there is.

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
from typing import TYPE_CHECKING

import duckdb

from eventstore.adapters import EventStoreAdapter, open_reader
from eventstore.identity import StoreIdentity, read_identity
from eventstore.positions import START, Checkpoint, Head, Holder, open_transaction
from eventstore.settings import Settings, TenantField
from warehouse.ingest import EventSource, attach_store

if TYPE_CHECKING:
    from eventstore.adapters.native import ParallelBatch

__all__ = ["StoreSource", "close_source", "head_holder", "open_source", "source_name"]


def source_name(adapter: EventStoreAdapter) -> str:
    """``<kind>:<schema>.<table>``, the value of ``raw.events.source`` for ``adapter``'s events."""
    return f"{adapter.kind}:{adapter.schema}.{adapter.table}"


@dataclass
class StoreSource:
    """A store adapter as an ingest source: its DuckDB SQL runs inside the lake connection."""

    adapter: EventStoreAdapter
    _identity: StoreIdentity | None = None
    tenant_field: TenantField | None = None  # PROJECTIONIST_TENANT_FIELD (checked against the kind by open_reader)

    @property
    def name(self) -> str:
        return source_name(self.adapter)

    def identity(self) -> StoreIdentity:
        if self._identity is None:
            adapter = self.adapter
            self._identity = read_identity(adapter.dsn, adapter.kind, adapter.schema, adapter.table)
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
        return self.adapter.pending(after)

    def batch_sql(self, after: Checkpoint, bound: int, limit: int | None) -> str:
        return self.adapter.ingest_sql(after, bound, limit)

    def parallel_batch(
        self, con: duckdb.DuckDBPyConnection, after: Checkpoint, bound: int, limit: int
    ) -> ParallelBatch | None:
        """The adapter's parallel scan of the next batch, for a kind that has one (native) and a batch it pays for."""
        planner = getattr(self.adapter, "parallel_batch", None)
        return planner(con, after, bound, limit) if planner is not None else None

    def close(self) -> None:
        """Release the adapter's connections."""
        self.adapter.close()

    def __enter__(self) -> StoreSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(settings: Settings, dsn: str) -> StoreSource:
    """The ingest source for ``settings.store_kind`` at ``dsn`` (its tables checked first)."""
    return StoreSource(open_reader(settings, dsn), tenant_field=settings.tenant_field)


def close_source(source: EventSource) -> None:
    """Release whatever connections ``source`` holds."""
    if isinstance(source, StoreSource):
        source.close()


def head_holder(source: EventSource, head: Head) -> Holder | None:
    """The open transaction holding ``head`` back (events wait above it), if the reading role can see it.

    Where the bound is a transaction id (native, Emmett) it is exactly the transaction with that
    id; where it is a high-water mark (Marten, ``eventsourcing``), the oldest open writing transaction.
    """
    if not head.events_pending or not isinstance(source, StoreSource):
        return None
    bound = head.bound if source.bound_kind == "transaction_id" else None
    return open_transaction(source.adapter.dsn, bound)
