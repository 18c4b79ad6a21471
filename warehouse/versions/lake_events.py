"""The lake's events between two checkpoints, in its ``(transaction_id, global_position)`` order."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import duckdb

from eventstore.positions import Checkpoint, in_range

__all__ = ["EVENTS", "count_events", "events_until", "filtered_view"]

#: Every event the lake holds, with the columns of raw.events.
EVENTS = "lake.raw.all_events"


@contextlib.contextmanager
def events_until(
    con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint, after: Checkpoint | None = None
) -> Iterator[str]:
    """A temporary view of the lake's events up to ``checkpoint`` (so a concurrent ingest cannot leak in).

    With ``after``, of the events in ``(after, checkpoint]`` only.
    """
    tx, position = int(checkpoint.transaction_id), int(checkpoint.global_position)
    # The plain bound on transaction_id reaches the Parquet scan (files and row groups beyond it are
    # skipped); an OR of both columns alone would be applied after reading every row.
    where = f"transaction_id <= {tx} AND (transaction_id < {tx} OR global_position <= {position})"
    if after is not None:
        where = in_range(after, checkpoint)
    with filtered_view(con, "events", EVENTS, where) as view:
        yield view


@contextlib.contextmanager
def filtered_view(con: duckdb.DuckDBPyConnection, prefix: str, relation: str, where: str) -> Iterator[str]:
    """A temporary view (named ``_<prefix>_…``) of the rows of ``relation`` meeting ``where``, dropped on leaving."""
    view = f"_{prefix}_{uuid.uuid4().hex[:12]}"
    con.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM {relation} WHERE {where}")
    try:
        yield view
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")


def count_events(con: duckdb.DuckDBPyConnection, after: Checkpoint, until: Checkpoint) -> int:
    """How many events the lake holds in ``(after, until]``."""
    row = con.execute(f"SELECT count(*) FROM {EVENTS} WHERE {in_range(after, until)}").fetchone()
    return int(row[0]) if row else 0
