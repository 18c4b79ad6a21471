"""One computation's context: its connection, its projection and the SQL of the events it consumes."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import duckdb

from eventstore.quoting import quote_literal
from projections.definition import Projection
from projections.registry import discover
from projections.upcasting import Upcasters, events_source, upcast_sql

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

__all__ = ["Run", "known_versions", "lazy_frame"]


def known_versions(projection: Projection, upcasters: Upcasters) -> dict[str, int]:
    """The highest version of each event type ``projection`` consumes that an upcaster or the projection declares."""
    return {t: max(upcasters.latest(t) or 1, projection.event_versions.get(t, 1)) for t in sorted(projection.consumes)}


class Run:
    """One computation's connection, projection and the SQL of its events.

    ``seen``, when given, is told how many events a body that goes through them in Python (a fold)
    has gone through so far, for progress bars.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        projection: Projection,
        events: str,
        upcasters: Upcasters | None,
        seen: Callable[[int], None] | None = None,
    ) -> None:
        if upcasters is None:
            upcasters = discover().upcasters
        self.con = con
        self.projection = projection
        self.columns = events_source(con, events)
        self.events, self.upcasters = events, upcasters
        self.seen = seen
        types = ", ".join(quote_literal(t) for t in sorted(projection.consumes))
        self.where = f"event_type IN ({types})"
        self.consumed = upcast_sql(con, events, upcasters, where=self.where, columns=self.columns)
        self.versions = known_versions(projection, upcasters)

    @functools.cached_property
    def consumed_raising(self) -> str:
        """The consumed events for the single pass, which raises on any data error anyway (upcast_sql's ``catch``)."""
        return upcast_sql(self.con, self.events, self.upcasters, where=self.where, columns=self.columns, catch=False)

    def restricted(self, streams: str | None, raising: bool = False) -> str:
        """Consumed events, of the streams in query ``streams`` only when given."""
        consumed = self.consumed_raising if raising else self.consumed
        if streams is None:
            return consumed
        return f"SELECT * FROM ({consumed}) AS e WHERE stream_id IN ({streams})"

    @contextmanager
    def registered(self, table: pa.Table) -> Iterator[str]:
        name = f"projectionist_{uuid.uuid4().hex}"
        self.con.register(name, table)
        try:
            yield name
        finally:
            self.con.unregister(name)


def lazy_frame(con: duckdb.DuckDBPyConnection, query: str) -> pl.LazyFrame:
    """The rows of ``query`` as a polars LazyFrame, fetched by DuckDB first.

    DuckDB's own lazy hand-over (``.pl(lazy=True)``) lets polars' thread pool pull from the DuckDB
    connection while it is collected; with polars 1.44 that deadlocked in the incremental tests.
    Fetching to Arrow first (zero-copy into polars) has no such coupling.
    """
    return con.sql(query).pl().lazy()
