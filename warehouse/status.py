"""Where the lake stands against its store: head, checkpoint, lag, table sizes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from eventstore.failures import translated
from eventstore.identity import StoreIdentity
from eventstore.positions import Checkpoint, Head, Holder
from warehouse.ingest import READ_FIX, EventSource, check_store, lake_checkpoint, lake_store, table_files
from warehouse.sources import head_holder

__all__ = ["LakeStatus", "lake_status"]


@dataclass(frozen=True)
class LakeStatus:
    """The lake's checkpoint against the store's head."""

    head: Head
    checkpoint: Checkpoint
    events: int  # events in raw.events, from the checkpoint row
    lag_events: int  # events in the store not yet in the lake (settled or in flight)
    lag_seconds: float  # age of the oldest event not yet in the lake (0 when none)
    snapshot: int  # the lake's current DuckLake snapshot id
    tables: dict[str, tuple[int, int]]  # schema.table -> (data files, bytes)
    store: StoreIdentity | None  # the store the lake holds (None before its first ingest)
    holder: Holder | None  # the open transaction holding the safe head back, if any and visible


def lake_status(con: duckdb.DuckDBPyConnection, source: EventSource) -> LakeStatus:
    """The lake's status against ``source``; refuses a source that is not the store the lake holds."""
    with translated(f"reading the status of {source.name} failed", fix=READ_FIX):
        return _lake_status(con, source)


def _lake_status(con: duckdb.DuckDBPyConnection, source: EventSource) -> LakeStatus:
    store = lake_store(con)
    check_store(store, source)
    checkpoint, events = lake_checkpoint(con)
    head = source.head(checkpoint)
    lag_events, oldest = source.pending(checkpoint)
    lag_seconds = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else 0.0
    snapshot = con.execute("SELECT id FROM ducklake_current_snapshot('lake')").fetchone()
    return LakeStatus(
        head,
        checkpoint,
        events,
        lag_events,
        lag_seconds,
        int(snapshot[0]) if snapshot else 0,
        table_files(con),
        store,
        head_holder(source, head),
    )
