"""Stream health: which streams are long or long-lived, and which are finished (candidates for archiving).

A stream is *finished* when its last event is one of the closing event types of its stream type
(:func:`closing_event_types`: ``CartConfirmed``/``CartCancelled`` for the demo shop's carts). Rows come
from ``analytics.stream_stats`` (written by the ingest), so ``projectionist streams``, the Dagster check
and analysts' queries count the same streams; long-lived is judged with the days given here (the
settings now), so changing ``PROJECTIONIST_LONG_STREAM_DAYS`` takes effect before the next ingest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from eventstore.quoting import quote_literal
from eventstore.settings import Settings
from projections.registry import Registry, discover
from warehouse.errors import LakeNotCreatedError

__all__ = [
    "StreamHealth",
    "StreamRow",
    "closing_event_types",
    "finished_predicate",
    "long_lived_sql",
    "stream_health",
]

#: The stream type whose closing event types apply to a stream of any type.
ANY_STREAM_TYPE = "*"


def closing_event_types(source: Settings | Registry) -> dict[str, frozenset[str]]:
    """Per stream type (``*``: any), the event types after which a stream of that type is finished.

    From :class:`~eventstore.settings.Settings`: ``PROJECTIONIST_CLOSING_EVENT_TYPES`` when it is set, else
    what the projection modules found now declare; from a :class:`~projections.registry.Registry`: what
    its modules declare (``CLOSING_EVENT_TYPES``). Empty when nothing is configured: then no stream is finished.
    """
    if isinstance(source, Settings):
        if source.closing_events:
            return {stream_type: frozenset(types) for stream_type, types in source.closing_events}
        source = discover()
    return {stream_type: frozenset(types) for stream_type, types in source.closing_events.items()}


def finished_predicate(closing: Mapping[str, frozenset[str]], *, stream_type: str, last_event_type: str) -> str:
    """A SQL condition, true for a stream whose last event closes it (``false`` when nothing is configured)."""
    parts = []
    for kind, types in sorted(closing.items()):
        listed = ", ".join(quote_literal(t) for t in sorted(types))
        if not listed:
            continue
        condition = f"{last_event_type} IN ({listed})"
        parts.append(
            condition if kind == ANY_STREAM_TYPE else f"({stream_type} = {quote_literal(kind)} AND {condition})"
        )
    return "(" + " OR ".join(parts) + ")" if parts else "false"


@dataclass(frozen=True)
class StreamRow:
    """One stream, as ``projectionist streams`` lists it."""

    stream_id: str
    stream_type: str | None
    events: int
    first_event_at: datetime
    last_event_at: datetime
    age: timedelta  # now - first event
    last_event_type: str
    is_long: bool
    is_long_lived: bool

    def as_json(self) -> dict[str, object]:
        """The row as JSON values (times in ISO 8601, the age in seconds)."""
        return {
            "stream_id": self.stream_id,
            "stream_type": self.stream_type,
            "events": self.events,
            "first_event_at": self.first_event_at.isoformat(),
            "last_event_at": self.last_event_at.isoformat(),
            "age_seconds": self.age.total_seconds(),
            "last_event_type": self.last_event_type,
            "is_long": self.is_long,
            "is_long_lived": self.is_long_lived,
        }


@dataclass(frozen=True)
class StreamHealth:
    """The lake's streams at a glance: counts, the longest streams, the finished ones."""

    streams: int
    long: int  # streams flagged is_long
    long_lived: int  # streams flagged is_long_lived
    finished: int  # archiving candidates: streams whose last event closes them
    closing: dict[str, frozenset[str]]
    thresholds: str  # the view's comment, which names its event threshold
    long_stream_days: float
    longest: list[StreamRow]
    candidates: list[StreamRow]  # the oldest finished streams first


def long_lived_sql(days: float) -> str:
    """The SQL condition on ``analytics.stream_stats`` of a stream that lived longer than ``days``."""
    return f"(duration > to_seconds({float(days) * 86400!r}))"


def stream_health(
    con: duckdb.DuckDBPyConnection, closing: Mapping[str, frozenset[str]], *, long_stream_days: float, limit: int = 10
) -> StreamHealth:
    """Counts of long, long-lived and finished streams, the ``limit`` longest and the ``limit`` oldest finished."""
    found = con.execute(
        "SELECT coalesce(any_value(comment), '') FROM duckdb_views() WHERE schema_name = 'analytics' "
        "AND view_name = 'stream_stats' HAVING count(*) > 0"
    ).fetchone()
    if found is None:
        raise LakeNotCreatedError("analytics.stream_stats does not exist yet: run `projectionist ingest` first.")
    finished = finished_predicate(closing, stream_type="stream_type", last_event_type="last_event_type")
    lived = long_lived_sql(long_stream_days)
    columns = (
        "stream_id, stream_type, events, first_event_at, last_event_at, get_current_timestamp() - first_event_at, "
        f"last_event_type, is_long, {lived}"
    )
    counts = con.execute(
        f"SELECT count(*), count(*) FILTER (is_long), count(*) FILTER ({lived}), "
        f"count(*) FILTER ({finished}) FROM analytics.stream_stats"
    ).fetchone()
    assert counts is not None
    longest = con.execute(
        f"SELECT {columns} FROM analytics.stream_stats ORDER BY events DESC, duration DESC, stream_id LIMIT ?",
        [limit],
    ).fetchall()
    candidates = con.execute(
        f"SELECT {columns} FROM analytics.stream_stats WHERE {finished} ORDER BY last_event_at, stream_id LIMIT ?",
        [limit],
    ).fetchall()
    return StreamHealth(
        streams=int(counts[0]),
        long=int(counts[1]),
        long_lived=int(counts[2]),
        finished=int(counts[3]),
        closing=dict(closing),
        thresholds=str(found[0]),
        long_stream_days=long_stream_days,
        longest=[StreamRow(*row) for row in longest],
        candidates=[StreamRow(*row) for row in candidates],
    )
