"""A rebuild's plan: its chunks (ranges of stream ids), its staging table, its progress in ``meta.rebuilds``.

A plan is made afresh, or read back from ``meta.rebuilds`` to continue an interrupted run of the
same build (same projection code, same upcasters, same chunking scheme, staging table still there).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb

from eventstore.positions import START, Checkpoint, in_range
from eventstore.quoting import quote_literal
from projections import Projection, Registry
from warehouse.ingest import INGEST_CONSUMER
from warehouse.versions.catalog import exists, validate_target
from warehouse.versions.lake_events import EVENTS, filtered_view

__all__ = [
    "CHUNK_EVENTS",
    "Plan",
    "Start",
    "UnfinishedRebuild",
    "chunk_of",
    "chunk_sizes",
    "plan_fingerprint",
    "read_start",
    "resumable_rebuild",
    "staging_table",
    "unfinished_rebuilds",
]

#: Events per chunk of a rebuild, by body kind. An SQL body runs inside DuckDB, which spills to disk
#: under its memory limit (its peak grows about 100 MiB per doubling of the chunk: 504 MiB for 4 M
#: events), so its chunks mostly bound the work a crash loses (5 M events: about 2.5 s) and pace
#: the progress bar, while each chunk costs about 0.2 s of its own; a polars body holds its chunk's
#: events in memory and a fold its chunk's rows. Measured in benchmarks/RESULTS.md ("Chunked rebuild").
CHUNK_EVENTS: dict[str, int] = {"sql": 5_000_000, "polars": 500_000, "fold": 1_000_000}


@dataclass(frozen=True)
class UnfinishedRebuild:
    """A rebuild that committed some of its chunks and not the rest: running, or interrupted."""

    name: str
    version: int
    fingerprint: str  # of the projection it builds; a rerun with other code starts over
    checkpoint: Checkpoint  # the lake checkpoint it builds up to
    events: int
    chunks: int
    chunks_done: int
    events_done: int
    rows: int
    started_at: datetime
    updated_at: datetime


def staging_table(name: str, version: int) -> str:
    """The table a rebuild of version ``version`` of ``name`` commits its chunks to."""
    return f"projections._staging_{name}_v{version}"


@dataclass(frozen=True)
class Plan:
    """What a rebuild run does: a fresh build, or the rest of an interrupted run of the same build."""

    until: Checkpoint
    events: int
    boundaries: tuple[str, ...]  # chunk i holds the streams with boundaries[i - 1] <= stream_id < boundaries[i]
    chunks_done: int  # committed before this run
    events_done: int
    rows: int
    dead_letters: int
    seconds: float  # spent by earlier runs
    run_id: str
    fresh: bool
    expected: tuple[str, int] | None  # the meta.rebuilds row (run_id, chunks_done) this run starts from

    @property
    def chunks(self) -> int:
        return len(self.boundaries) + 1


def plan_fingerprint(registry: Registry) -> str:
    """What else must not change for committed chunks to stay valid: the upcasters and the chunking scheme."""
    return hashlib.sha256(f"{registry.upcasters.fingerprint}/stream_id ranges".encode()).hexdigest()


# What a rebuild reads first, in one statement (each read of the catalog costs a round trip): the
# version's state, its row of meta.rebuilds (an interrupted run), the lake's ingest checkpoint and
# whether the version has dead letters (which its last commit replaces). The rows are picked by an
# aggregate's FILTER rather than a WHERE: DuckLake answers a WHERE pushed into its scan with more
# catalog queries (file statistics) than reading these small tables whole costs (20-33 ms against
# 40-57 ms for the four, measured).
_START = (
    "SELECT (SELECT any_value(state) FILTER (WHERE name = $1 AND version = $2) FROM meta.projection_versions), "
    "(SELECT any_value([fingerprint, plan, run_id, transaction_id::VARCHAR, global_position::VARCHAR, "
    "events::VARCHAR, boundaries, chunks_done::VARCHAR, events_done::VARCHAR, rows::VARCHAR, "
    "dead_letters::VARCHAR, seconds::VARCHAR]) FILTER (WHERE name = $1 AND version = $2) FROM meta.rebuilds), "
    "(SELECT any_value([transaction_id, global_position, events]) FILTER (WHERE consumer = $3) "
    "FROM meta.checkpoints), "
    "(SELECT count(*) FILTER (WHERE projection = $1 AND version = $2) FROM meta.dead_letters)"
)


@dataclass(frozen=True)
class Start:
    """What a rebuild reads first (:data:`_START`): its plan, the version's recorded state and its dead letters."""

    plan: Plan
    state: str | None  # None: the version is not recorded yet
    letters: int  # how many dead letters the version has (its last commit replaces them)

    @property
    def at_once(self) -> bool:
        """Whether the rebuild can be done in the transaction that read this: one chunk, of a version that exists."""
        # A version seen for the first time (or still building) is first marked as building, in a
        # commit of its own, so that `status` shows it while it builds.
        return self.plan.chunks == 1 and self.plan.chunks_done == 0 and self.state not in (None, "building", "dropped")


def read_start(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    chunk_events: int | None,
    *,
    missing_ok: bool = False,
) -> Start | None:
    """Inside an open transaction: what a rebuild of ``projection`` reads first, with its plan.

    None, with ``missing_ok``, when a meta table is missing (a new lake, or one from before a meta
    table was added): the failed read has aborted the transaction.
    """
    try:
        read = con.execute(_START, [projection.name, projection.version, INGEST_CONSUMER]).fetchone()
    except duckdb.CatalogException:
        if not missing_ok:
            raise
        return None
    assert read is not None
    state, interrupted, checkpoint, letters = read
    return Start(_plan(con, registry, projection, chunk_events, interrupted, checkpoint), state, int(letters))


def _plan(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    chunk_events: int | None,
    row: list[str] | None,
    checkpoint: list[int] | None,
) -> Plan:
    """Continue the interrupted run in ``row`` (of meta.rebuilds) if it built the same thing, else start afresh."""
    name, version = projection.name, projection.version
    if (
        row is not None
        and row[0] == projection.fingerprint
        and row[1] == plan_fingerprint(registry)
        and exists(con, "projections", staging_table(name, version).split(".")[1])
    ):
        return Plan(
            until=Checkpoint(int(row[3]), int(row[4])),
            events=int(row[5]),
            boundaries=tuple(json.loads(row[6])),
            chunks_done=int(row[7]),
            events_done=int(row[8]),
            rows=int(row[9]),
            dead_letters=int(row[10]),
            seconds=float(row[11]),
            run_id=str(row[2]),
            fresh=False,
            expected=(str(row[2]), int(row[7])),
        )
    # The ingest's checkpoint row counts the events up to it: no scan needed.
    until, events = (
        (Checkpoint(int(checkpoint[0]), int(checkpoint[1])), int(checkpoint[2])) if checkpoint else (START, 0)
    )
    size = chunk_events or CHUNK_EVENTS[projection.kind]
    # A key gathering several streams (stream_keys) needs all of them in one computation.
    chunks = max(1, -(-events // size)) if projection.keyed_by_stream else 1
    boundaries = stream_boundaries(con, until, chunks) if chunks > 1 else ()
    stale = (str(row[2]), int(row[7])) if row is not None else None
    return Plan(until, events, boundaries, 0, 0, 0, 0, 0.0, uuid.uuid4().hex, True, stale)


def stream_boundaries(con: duckdb.DuckDBPyConnection, until: Checkpoint, chunks: int) -> tuple[str, ...]:
    """Stream ids splitting the events up to ``until`` into ``chunks`` ranges of about as many events.

    Ranges rather than a hash of the stream: a range is a plain comparison DuckDB pushes into the
    Parquet scan through the views, so each chunk decodes only its own events' columns (a hash
    filter was applied after the scan, measured). Quantiles of a sample of events are close enough.
    """
    cuts = ", ".join(f"{i / chunks!r}" for i in range(1, chunks))
    row = con.execute(
        f"SELECT quantile_disc(stream_id, [{cuts}]) FROM (SELECT stream_id FROM {EVENTS} "
        f"WHERE {in_range(START, until)} USING SAMPLE reservoir(20000 ROWS) REPEATABLE (7)) AS sample"
    ).fetchone()
    return tuple(sorted({str(b) for b in row[0] if b is not None})) if row and row[0] else ()


@contextlib.contextmanager
def chunk_of(con: duckdb.DuckDBPyConnection, events: str, chunk: int, plan: Plan) -> Iterator[str]:
    """A temporary view of the events of chunk ``chunk``: the streams of its range."""
    if plan.chunks == 1:
        yield events
        return
    with filtered_view(con, "chunk", events, _chunk_range(plan, chunk)) as view:
        yield view


def _chunk_range(plan: Plan, chunk: int) -> str:
    """SQL: the stream is in chunk ``chunk`` of ``plan``."""
    return stream_range(plan.boundaries, chunk)


def stream_range(bounds: Sequence[str], chunk: int) -> str:
    """SQL: the stream is in range ``chunk`` of ``bounds`` (the first also takes NULL stream ids, if any)."""
    low = f"stream_id >= {quote_literal(bounds[chunk - 1])}" if chunk > 0 else None
    high = f"stream_id < {quote_literal(bounds[chunk])}" if chunk < len(bounds) else None
    if low is None:
        return f"({high} OR stream_id IS NULL)"
    return low if high is None else f"{low} AND {high}"


def chunk_sizes(con: duckdb.DuckDBPyConnection, events: str, plan: Plan) -> list[int]:
    """How many of ``events`` each chunk of ``plan`` holds."""
    if plan.chunks == 1:
        return [plan.events]
    which = " ".join(f"WHEN {_chunk_range(plan, chunk)} THEN {chunk}" for chunk in range(plan.chunks))
    counts = dict(con.execute(f"SELECT CASE {which} END, count(*) FROM {events} GROUP BY ALL").fetchall())
    return [int(counts.get(chunk, 0)) for chunk in range(plan.chunks)]


def resumable_rebuild(
    con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int
) -> UnfinishedRebuild | None:
    """The unfinished rebuild that :func:`rebuild` of ``name`` v``version`` would continue, if any (reads only)."""
    projection = validate_target(registry, name, version)
    found = next((u for u in unfinished_rebuilds(con, name) if u.version == version), None)
    if found is None or found.fingerprint != projection.fingerprint:
        return None
    row = con.execute("SELECT plan FROM meta.rebuilds WHERE name = ? AND version = ?", [name, version]).fetchone()
    if row is None or row[0] != plan_fingerprint(registry):
        return None
    return found if exists(con, "projections", staging_table(name, version).split(".")[1]) else None


def unfinished_rebuilds(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[UnfinishedRebuild]:
    """Rebuilds (of ``name``, or all) with committed chunks and more to go, by name and version (reads only)."""
    if not exists(con, "meta", "rebuilds"):
        return []
    rows = con.execute(
        "SELECT name, version, fingerprint, transaction_id, global_position, events, chunks, chunks_done, "
        "events_done, rows, started_at, updated_at FROM meta.rebuilds WHERE ?::VARCHAR IS NULL OR name = ? "
        "ORDER BY name, version",
        [name, name],
    ).fetchall()
    return [
        UnfinishedRebuild(
            str(r[0]),
            int(r[1]),
            str(r[2]),
            Checkpoint(int(r[3]), int(r[4])),
            int(r[5]),
            int(r[6]),
            int(r[7]),
            int(r[8]),
            int(r[9]),
            r[10],
            r[11],
        )
        for r in rows
    ]
