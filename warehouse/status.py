"""Where the lake stands against its store: head, checkpoint, lag, table sizes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from eventstore.reader import Checkpoint, Head
from warehouse.ingest import EventSource, lake_checkpoint, table_files

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


def lake_status(con: duckdb.DuckDBPyConnection, source: EventSource) -> LakeStatus:
    """The lake's status against ``source``."""
    checkpoint, events = lake_checkpoint(con)
    head = source.head(checkpoint)
    lag_events, oldest = source.pending(checkpoint)
    lag_seconds = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else 0.0
    row = con.execute("SELECT id FROM ducklake_current_snapshot('lake')").fetchone()
    return LakeStatus(head, checkpoint, events, lag_events, lag_seconds, int(row[0]) if row else 0, table_files(con))
