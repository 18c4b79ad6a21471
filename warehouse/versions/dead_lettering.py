"""Dead letters: the events a projection version (or the ingest) could not use, recorded with why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb

from warehouse.versions.catalog import exists

if TYPE_CHECKING:
    from projections import PoisonEvent, Projection  # the engine: polars, pyarrow (status reads dead letters)

__all__ = ["DeadLetter", "dead_letters", "unrecorded", "write_dead_letters"]


@dataclass(frozen=True)
class DeadLetter:
    """An event a consumer could not use, and why: a projection version's poison, or the ingest's bad row."""

    event_id: str
    global_position: int
    projection: str  # a projection's name, or '*ingest*' for an event the store's adapter could not decode
    version: int | None  # None for the ingest
    reason: str
    at: datetime


def write_dead_letters(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    poison: Sequence[PoisonEvent],
    at: datetime,
    table: str = "meta.dead_letters",
) -> None:
    """Dead-letter ``poison`` for ``projection``'s version in ``table`` (inside the caller's transaction)."""
    if poison:
        con.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
            [[p.event_id, p.global_position, projection.name, projection.version, p.reason, at] for p in poison],
        )


def unrecorded(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    poison: Sequence[PoisonEvent],
    table: str = "meta.dead_letters",
) -> list[PoisonEvent]:
    """The events of ``poison`` not yet dead-lettered for this version (a stream touched again reports its old ones)."""
    if not poison:
        return []
    recorded = {
        str(r[0])
        for r in con.execute(
            f"SELECT event_id FROM {table} WHERE projection = ? AND version = ? AND event_id IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [projection.name, projection.version, [p.event_id for p in poison]],
        ).fetchall()
    }
    return [p for p in poison if p.event_id not in recorded]


def dead_letters(
    con: duckdb.DuckDBPyConnection, *, name: str | None = None, since: datetime | None = None
) -> list[DeadLetter]:
    """Dead-lettered events (of projection ``name``, since ``since``), newest first (reads only)."""
    if not exists(con, "meta", "dead_letters"):
        return []
    rows = con.execute(
        "SELECT event_id, global_position, projection, version, reason, dead_lettered_at FROM meta.dead_letters "
        "WHERE (?::VARCHAR IS NULL OR projection = ?) "
        "AND (?::TIMESTAMPTZ IS NULL OR dead_lettered_at >= ?::TIMESTAMPTZ) "
        "ORDER BY dead_lettered_at DESC, global_position",
        [name, name, since, since],
    ).fetchall()
    return [
        DeadLetter(str(r[0]), int(r[1]), str(r[2]), None if r[3] is None else int(r[3]), str(r[4]), r[5]) for r in rows
    ]
