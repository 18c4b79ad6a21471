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
from typing import TYPE_CHECKING

import duckdb

from eventstore.positions import Checkpoint, in_range
from warehouse.versions.lake_events import EVENTS

if TYPE_CHECKING:
    from warehouse.ingest import LandedBatch

__all__ = ["MAX_CYCLE_EVENTS", "CycleEvents", "StreamMemory", "cycle_events"]

#: The most events :func:`cycle_events` holds in memory (about 1 KiB each at most, with their JSON).
MAX_CYCLE_EVENTS = 200_000


@dataclass(frozen=True)
class CycleEvents:
    """A temporary table of the lake's events up to ``until`` of every stream with an event in ``(after, until]``."""

    table: str
    after: Checkpoint
    until: Checkpoint
    #: A temporary table of the touched streams with no event up to ``new_after`` (known from
    #: :class:`StreamMemory`): a version at or below that checkpoint has no row keyed by them yet.
    new_streams: str | None = None
    new_after: Checkpoint | None = None

    def covers(self, after: Checkpoint, until: Checkpoint) -> bool:
        """Whether the table holds every event a version advancing over ``(after, until]`` reads for its streams."""
        return self.until == until and self.after <= after


def _bare(table: str) -> str:
    """``temp.main.x`` → ``x``: DuckDB creates a temporary table by its bare name (``CREATE TEMP TABLE x``)."""
    return table.rsplit(".", 1)[-1]


def _up_to(until: Checkpoint) -> str:
    tx, position = int(until.transaction_id), int(until.global_position)
    return f"transaction_id <= {tx} AND (transaction_id < {tx} OR global_position <= {position})"


class StreamMemory:
    """What a long-running advancer (``follow``'s cycle, its wide lane) remembers of the lake's streams.

    Reading a touched stream's earlier events means scanning every event of the lake for its id:
    files are in ingest order, so no statistic narrows it (100–300 ms at 175,000 events on this
    host, growing with the lake). Between cycles, on one connection, this keeps:

    - which streams have an event up to ``checkpoint``: a 64-bit hash of each id (8 bytes a
      stream; a collision only makes a stream read from the lake when it need not be);
    - every event up to ``checkpoint`` of the streams touched lately (at most ``limit`` events,
      the streams touched longest ago dropped first).

    So a touched stream is new (nothing earlier to read), or remembered (its events are here), or
    read from the lake: only those. It is valid while its connection is the caller's, its
    checkpoint lies in the cycle's range and no ``forget`` rewrote events (``meta.forgotten``'s count).
    """

    def __init__(self, limit: int = MAX_CYCLE_EVENTS) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.known, self.hot = f"temp.main._known_streams_{suffix}", f"temp.main._hot_events_{suffix}"
        self.limit = limit
        self.con: duckdb.DuckDBPyConnection | None = None
        self.checkpoint: Checkpoint | None = None
        self.forgotten = 0
        self.reads = 0  # cycles that had to read earlier events from the lake (for tests and benchmarks)
        self.staged = 0  # cycles whose new events came from the ingest's staged batch (likewise)
        self.held = 0  # cycles that took earlier events of touched streams from what it holds (likewise)

    def usable(self, con: duckdb.DuckDBPyConnection, after: Checkpoint, until: Checkpoint, forgotten: int) -> bool:
        """Whether it holds what a cycle over ``(after, until]`` on ``con`` needs."""
        return (
            self.con is con
            and self.checkpoint is not None
            and after <= self.checkpoint <= until
            and self.forgotten == forgotten
        )

    def forget(self) -> None:
        """Drop what it holds (its tables go with their connection, or at the next :meth:`remember`)."""
        self.checkpoint = None

    def remember(
        self,
        con: duckdb.DuckDBPyConnection,
        streams: str,
        events: str,
        until: Checkpoint,
        forgotten: int,
        fresh: bool,
        held: bool = True,
    ) -> None:
        """Add a cycle's touched ``streams`` and their ``events`` (all, up to ``until``); ``fresh``: start anew.

        ``held``: whether some of the streams may have events here already (False: none has, nothing to replace).
        """
        if fresh:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {_bare(self.known)} AS "
                f"SELECT DISTINCT hash(stream_id) AS h FROM {EVENTS} WHERE {_up_to(until)}"
            )
            con.execute(f"CREATE OR REPLACE TEMP TABLE {_bare(self.hot)} AS SELECT * FROM {events}")
        else:
            con.execute(
                # ANTI JOIN, not NOT IN: DuckDB builds its hash table on the cycle's few streams, not on every
                # stream known (NOT IN's null semantics make it a mark join over the large side: 2× slower).
                f"INSERT INTO {self.known} SELECT n.h FROM (SELECT DISTINCT hash(stream_id) AS h FROM {streams}) AS n "
                f"ANTI JOIN {self.known} AS k ON k.h = n.h"
            )
            if held:
                con.execute(f"DELETE FROM {self.hot} WHERE stream_id IN (SELECT stream_id FROM {streams})")
            con.execute(f"INSERT INTO {self.hot} SELECT * FROM {events}")
        size = con.execute(f"SELECT count(*) FROM {self.hot}").fetchone()
        if size is not None and size[0] > self.limit:
            # The streams last touched longest ago go first, about half of what is held.
            con.execute(
                f"DELETE FROM {self.hot} WHERE stream_id IN (SELECT stream_id FROM {self.hot} GROUP BY stream_id "
                f"HAVING max(transaction_id) < (SELECT quantile_disc(transaction_id, 0.5) FROM {self.hot}))"
            )
        self.con, self.checkpoint, self.forgotten = con, until, forgotten


@contextlib.contextmanager
def cycle_events(
    con: duckdb.DuckDBPyConnection,
    after: Checkpoint,
    until: Checkpoint,
    limit: int = MAX_CYCLE_EVENTS,
    *,
    memory: StreamMemory | None = None,
    forgotten: int = 0,
    staged: LandedBatch | None = None,
) -> Iterator[CycleEvents | None]:
    """The events of the streams touched in ``(after, until]``, in a temporary table dropped on leaving.

    None when they are more than ``limit``: the caller reads the lake itself. ``memory`` (kept by
    the caller between cycles on ``con``; ``forgotten``: ``meta.forgotten``'s count now) spares
    reading the earlier events of streams it knows to be new or holds. ``staged``: the ingest batch just
    committed on ``con``, in its temporary table; when it is exactly ``(after, until]`` and the memory is
    usable (no ``forget`` rewrote events since the memory's cycle), the range's events come from it
    rather than from the lake.
    """
    suffix = uuid.uuid4().hex[:12]
    streams, table = f"temp.main._cycle_streams_{suffix}", f"temp.main._cycle_events_{suffix}"
    cold, new = f"temp.main._cycle_cold_{suffix}", f"temp.main._cycle_new_{suffix}"
    try:
        yield _read(con, after, until, limit, memory, forgotten, (streams, table, cold, new), staged)
    except BaseException:
        if memory is not None:
            memory.forget()  # it may hold half of a cycle
        with contextlib.suppress(duckdb.Error):  # a broken connection: the error under way is the one to see
            _drop(con, table, cold, new, streams)
        raise
    _drop(con, table, cold, new, streams)


def _read(
    con: duckdb.DuckDBPyConnection,
    after: Checkpoint,
    until: Checkpoint,
    limit: int,
    memory: StreamMemory | None,
    forgotten: int,
    names: tuple[str, str, str, str],
    staged: LandedBatch | None = None,
) -> CycleEvents | None:
    """:func:`cycle_events`' tables, written under ``names`` (streams, events, cold, new)."""
    streams, table, cold, new = names
    usable = memory is not None and memory.usable(con, after, until, forgotten)
    if usable:
        # The range's events once (the touched streams come from them), kept as the table's first part:
        # the staged batch when it is that range (a lake read costs 40-70 ms on a PostgreSQL catalog).
        exact = staged is not None and staged.table is not None and (staged.after, staged.until) == (after, until)
        source = f"temp.main.{staged.table}" if exact and staged is not None else EVENTS
        if exact and memory is not None:
            memory.staged += 1
        con.execute(
            f"CREATE TEMP TABLE {_bare(table)} AS SELECT * FROM {source} WHERE {in_range(after, until)} "
            f"LIMIT {limit + 1}"
        )
        con.execute(f"CREATE TEMP TABLE {_bare(streams)} AS SELECT DISTINCT stream_id FROM {table}")
    else:
        con.execute(
            f"CREATE TEMP TABLE {_bare(streams)} AS SELECT DISTINCT stream_id FROM {EVENTS} "
            f"WHERE {in_range(after, until)} LIMIT {limit + 1}"
        )
    if _past(con, table if usable else streams, limit, memory):
        return None
    known_until = memory.checkpoint if memory is not None and usable else None
    held = True  # whether some touched stream may have earlier events in the memory
    if memory is not None and usable:
        con.execute(
            f"CREATE TEMP TABLE {_bare(new)} AS SELECT s.stream_id FROM {streams} AS s "
            f"ANTI JOIN {memory.known} AS k ON k.h = hash(s.stream_id)"
        )
        # Earlier events: from memory for the streams it holds, none for new ones, the lake for the rest.
        con.execute(
            f"CREATE TEMP TABLE {_bare(cold)} AS SELECT s.stream_id FROM {streams} AS s "
            f"SEMI JOIN {memory.known} AS k ON k.h = hash(s.stream_id) "
            f"ANTI JOIN {memory.hot} AS hot ON hot.stream_id = s.stream_id"
        )
        counted = con.execute(
            f"SELECT (SELECT count(*) FROM {streams}) - (SELECT count(*) FROM {new}), (SELECT count(*) FROM {cold})"
        ).fetchone()
        known, unknown = (int(counted[0]), int(counted[1])) if counted else (1, 1)
        parts = []
        # Scanning what memory holds (up to `limit` events) costs 16 ms under follow's load: only when some
        # touched stream is in it (known, and not cold). A cycle of new streams (new carts) reads none.
        held = known > unknown
        if held:
            memory.held += 1
            parts.append(
                f"SELECT * FROM {memory.hot} WHERE {_up_to(after)} AND stream_id IN (SELECT stream_id FROM {streams})"
            )
        if unknown:
            memory.reads += 1
            parts.append(
                f"SELECT * FROM {EVENTS} WHERE {_up_to(after)} AND stream_id IN (SELECT stream_id FROM {cold})"
            )
        if parts:
            con.execute(f"INSERT INTO {table} {' UNION ALL '.join(parts)} LIMIT {limit + 1}")
    else:
        con.execute(
            f"CREATE TEMP TABLE {_bare(table)} AS SELECT * FROM {EVENTS} WHERE {_up_to(until)} "
            f"AND stream_id IN (SELECT stream_id FROM {streams}) LIMIT {limit + 1}"
        )
    if _past(con, table, limit, memory):
        return None
    if memory is not None:
        memory.remember(con, streams, table, until, forgotten, fresh=not usable, held=held)
    return CycleEvents(table, after, until, new if known_until is not None else None, known_until)


def _drop(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    for name in tables:
        con.execute(f"DROP TABLE IF EXISTS {name}")


def _past(con: duckdb.DuckDBPyConnection, table: str, limit: int, memory: StreamMemory | None) -> bool:
    """True, and the memory dropped, when ``table`` holds more than ``limit`` rows (the cycle then reads the lake)."""
    count = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    if count is not None and count[0] <= limit:
        return False
    if memory is not None:
        memory.forget()
    return True
