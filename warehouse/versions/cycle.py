"""One advance's events, read from the lake once: every event of the streams that have new events.

Advancing a version runs a dozen statements over the events (the touched streams, their keys
before and after, the rows of those keys, the poison checks, the count). Over ``lake.raw.all_events``
each statement pays DuckLake's catalog reads for both tiers (40–70 ms on a PostgreSQL catalog,
measured, whatever it reads), so an advance cost seconds whatever it carried. :func:`cycle_events`
reads instead, in two statements, every event up to ``until`` of each stream with an event in
``(after, until]`` into a temporary table: all a version keyed by stream needs, and all the
touched streams' contributions need for the others. Each statement over it then costs a
millisecond or two. A range too large to hold (a first catch-up after a long stop) is read from
the lake as before.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb

from eventstore.positions import Checkpoint
from warehouse.versions.lake_events import EVENTS, in_range

__all__ = ["MAX_CYCLE_EVENTS", "CycleEvents", "cycle_events"]

#: The most events :func:`cycle_events` holds in memory (about 1 KiB each at most, with their JSON).
MAX_CYCLE_EVENTS = 200_000


@dataclass(frozen=True)
class CycleEvents:
    """A temporary table of the lake's events up to ``until`` of every stream with an event in ``(after, until]``."""

    table: str
    after: Checkpoint
    until: Checkpoint

    def covers(self, after: Checkpoint, until: Checkpoint) -> bool:
        """Whether the table holds every event a version advancing over ``(after, until]`` reads for its streams."""
        return self.until == until and self.after <= after


def _up_to(until: Checkpoint) -> str:
    tx, position = int(until.transaction_id), int(until.global_position)
    return f"transaction_id <= {tx} AND (transaction_id < {tx} OR global_position <= {position})"


@contextlib.contextmanager
def cycle_events(
    con: duckdb.DuckDBPyConnection, after: Checkpoint, until: Checkpoint, limit: int = MAX_CYCLE_EVENTS
) -> Iterator[CycleEvents | None]:
    """The events of the streams touched in ``(after, until]``, in a temporary table dropped on leaving.

    None when they are more than ``limit``: the caller reads the lake itself.
    """
    suffix = uuid.uuid4().hex[:12]
    streams, table = f"_cycle_streams_{suffix}", f"_cycle_events_{suffix}"
    try:
        con.execute(
            f"CREATE TEMP TABLE {streams} AS SELECT DISTINCT stream_id FROM {EVENTS} "
            f"WHERE {in_range(after, until)} LIMIT {limit + 1}"
        )
        count = con.execute(f"SELECT count(*) FROM {streams}").fetchone()
        if count is None or count[0] > limit:
            yield None
            return
        con.execute(
            f"CREATE TEMP TABLE {table} AS SELECT * FROM {EVENTS} WHERE {_up_to(until)} "
            f"AND stream_id IN (SELECT stream_id FROM {streams}) LIMIT {limit + 1}"
        )
        count = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        if count is None or count[0] > limit:
            yield None
            return
        yield CycleEvents(f"temp.main.{table}", after, until)
    finally:
        con.execute(f"DROP TABLE IF EXISTS temp.main.{table}")
        con.execute(f"DROP TABLE IF EXISTS temp.main.{streams}")
