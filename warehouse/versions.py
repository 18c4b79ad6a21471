"""Versioned projection tables in the lake: rebuild, incremental project, promote, rollback, retention.

Each version of a projection lives in ``projections.<name>_v<N>``; ``meta.projection_versions``
records its state (``building`` → ``ready`` → ``live`` → ``retired``, and ``dropped`` after
retention), the code fingerprint it was built with and its checkpoint in the lake's
``(transaction_id, global_position)`` order. ``analytics.<name>`` is a view over the live version;
promotion swaps it, the state changes and ``meta.promotions`` in one DuckLake transaction.

A version whose code changed without a version bump (fingerprint differs from the recorded one)
is refused by :func:`project` and :func:`promote`; the fix is to bump the version, or to run
:func:`rebuild` of the same version, which replaces its table (explicitly) from the lake.

A rebuild works in chunks (ranges of stream ids, sized from the event count) committed one by one
to a staging table, ``projections._staging_<name>_v<N>``, with its progress in ``meta.rebuilds``; its
last commit renames the staging table over ``projections.<name>_v<N>`` together with the rows
count, state, checkpoint and dead letters. A rerun after a crash continues after the last
committed chunk. See docs/versions.md.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.positions import START, Checkpoint
from eventstore.quoting import quote_literal
from projections import CHECKS, DATA_ERRORS, InsertResult, Projection, Registry, compute, compute_into, touched_keys
from projections.engine import Check, PoisonEvent, find_poison, poison_stop_error
from projections.errors import PoisonEventError
from warehouse.errors import FingerprintMismatchError, LakeUnavailableError, PromotionError
from warehouse.ingest import INGEST_CONSUMER, lake_checkpoint
from warehouse.lake import (
    DEAD_LETTER_COLUMNS,
    columns_ddl,
    comment_column,
    is_conflict,
    retry_conflicts,
    rollback_transaction,
    set_view_column_comments,
    transaction,
)

__all__ = [
    "CHUNK_EVENTS",
    "DeadLetter",
    "FingerprintMismatchError",
    "ProjectResult",
    "Promotion",
    "PromotionError",
    "UnfinishedRebuild",
    "VersionInfo",
    "advance_version",
    "dead_letters",
    "ensure_version_tables",
    "lag",
    "list_versions",
    "project",
    "promote",
    "rebuild",
    "resumable_rebuild",
    "retain",
    "rollback",
    "unfinished_rebuilds",
    "validate_target",
]

EVENTS = "lake.raw.all_events"
STATES = ("building", "ready", "live", "retired", "dropped")

#: Events per chunk of a rebuild, by body kind. An SQL body runs inside DuckDB, which spills to disk
#: under its memory limit (its peak grows about 100 MiB per doubling of the chunk: 504 MiB for 4 M
#: events), so its chunks mostly bound the work a crash loses (5 M events: about 2.5 s) and pace
#: the progress bar, while each chunk costs about 0.2 s of its own; a polars body holds its chunk's
#: events in memory and a fold its chunk's rows. Measured in benchmarks/RESULTS.md ("Chunked rebuild").
CHUNK_EVENTS: dict[str, int] = {"sql": 5_000_000, "polars": 500_000, "fold": 1_000_000}


@dataclass(frozen=True)
class VersionInfo:
    """One version of a projection in the lake."""

    name: str
    version: int
    state: str  # 'building' | 'ready' | 'live' | 'retired' | 'dropped'
    fingerprint: str
    checkpoint: Checkpoint
    rows: int
    built_at: datetime | None
    build_seconds: float | None
    table: str  # 'projections.<name>_v<N>'


@dataclass(frozen=True)
class ProjectResult:
    """What one project or rebuild did to one version."""

    name: str
    version: int
    events: int
    keys: int
    rows: int
    checkpoint: Checkpoint
    dead_letters: int
    seconds: float
    chunks: int = 1  # a rebuild's chunks
    resumed_chunks: int = 0  # chunks an interrupted run of the same rebuild had committed


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


@dataclass(frozen=True)
class Promotion:
    """One promotion (or rollback) of a projection's live version."""

    name: str
    from_version: int | None
    to_version: int
    at: datetime
    actor: str
    comparison_id: str | None


@dataclass(frozen=True)
class DeadLetter:
    """An event a consumer could not use, and why: a projection version's poison, or the ingest's bad row."""

    event_id: str
    global_position: int
    projection: str  # a projection's name, or '*ingest*' for an event the store's adapter could not decode
    version: int | None  # None for the ingest
    reason: str
    at: datetime


_VERSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.projection_versions (name VARCHAR, version INTEGER, state VARCHAR, "
    "fingerprint VARCHAR, transaction_id BIGINT, global_position BIGINT, rows BIGINT, built_at TIMESTAMPTZ, "
    "build_seconds DOUBLE, updated_at TIMESTAMPTZ)"
)
_PROMOTIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.promotions (name VARCHAR, from_version INTEGER, to_version INTEGER, "
    "promoted_at TIMESTAMPTZ, actor VARCHAR, comparison_id VARCHAR)"
)
_REBUILDS_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.rebuilds (name VARCHAR, version INTEGER, fingerprint VARCHAR, plan VARCHAR, "
    "run_id VARCHAR, transaction_id BIGINT, global_position BIGINT, events BIGINT, chunks INTEGER, "
    "boundaries VARCHAR, chunks_done INTEGER, events_done BIGINT, rows BIGINT, dead_letters BIGINT, "
    "seconds DOUBLE, started_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)"
)
# Same columns as meta.dead_letters (created with the lake).
_REBUILD_DEAD_LETTERS_DDL = f"CREATE TABLE IF NOT EXISTS meta.rebuild_dead_letters ({columns_ddl(DEAD_LETTER_COLUMNS)})"
_TABLE_COMMENTS = {
    "meta.projection_versions": "One row per projection version: state, code fingerprint, checkpoint, rows, build.",
    "meta.promotions": "Every promotion and rollback: which version became live, from which, who, when, gated by.",
    "meta.rebuilds": "Rebuilds under way or interrupted: their chunks, and how many their staging table holds.",
    "meta.rebuild_dead_letters": "Dead letters of the committed chunks of a rebuild under way (poison policy skip).",
}


def _exists(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM (SELECT schema_name, table_name AS n FROM duckdb_tables() WHERE database_name = 'lake' "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = 'lake') "
        "WHERE schema_name = ? AND n = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def ensure_version_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``meta.projection_versions``, ``meta.promotions`` and the rebuilds' tables if missing.

    (``meta.dead_letters`` comes with the lake.)
    """
    found = con.execute(
        "SELECT 'meta.' || table_name FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'meta'"
    ).fetchall()
    if {str(r[0]) for r in found} >= set(_TABLE_COMMENTS):
        return

    def create() -> None:
        with transaction(con):
            for ddl in (_VERSIONS_DDL, _PROMOTIONS_DDL, _REBUILDS_DDL, _REBUILD_DEAD_LETTERS_DDL):
                con.execute(ddl)
            for table, comment in _TABLE_COMMENTS.items():
                con.execute(f"COMMENT ON TABLE {table} IS {quote_literal(comment)}")

    retry_conflicts(create, "creating the projection version tables")


def _table(name: str, version: int) -> str:
    return f"projections.{name}_v{version}"


def _info(row: tuple[Any, ...]) -> VersionInfo:
    name, version = str(row[0]), int(row[1])
    return VersionInfo(
        name=name,
        version=version,
        state=str(row[2]),
        fingerprint=str(row[3]),
        checkpoint=Checkpoint(int(row[4] or 0), int(row[5] or 0)),
        rows=int(row[6] or 0),
        built_at=row[7],
        build_seconds=None if row[8] is None else float(row[8]),
        table=_table(name, version),
    )


_VERSION_COLUMNS = "name, version, state, fingerprint, transaction_id, global_position, rows, built_at, build_seconds"
_ALL_VERSIONS = f"SELECT {_VERSION_COLUMNS} FROM meta.projection_versions ORDER BY name, version"


def list_versions(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[VersionInfo]:
    """The versions recorded in the lake (of ``name``, or all), by name and version (reads only)."""
    if not _exists(con, "meta", "projection_versions"):
        return []
    rows = con.execute(
        f"SELECT {_VERSION_COLUMNS} FROM meta.projection_versions WHERE ? IS NULL OR name = ? ORDER BY name, version",
        [name, name],
    ).fetchall()
    return [_info(r) for r in rows]


def _version(con: duckdb.DuckDBPyConnection, name: str, version: int) -> VersionInfo | None:
    return next((v for v in list_versions(con, name) if v.version == version), None)


def _live(con: duckdb.DuckDBPyConnection, name: str) -> VersionInfo | None:
    return next((v for v in list_versions(con, name) if v.state == "live"), None)


def validate_target(registry: Registry, name: str, version: int | None = None) -> Projection:
    """The registered projection ``name`` (at ``version``, default its highest); a clear error if unknown."""
    return registry.get(name, version)


def _check_fingerprint(projection: Projection, info: VersionInfo) -> None:
    if info.fingerprint != projection.fingerprint:
        raise FingerprintMismatchError(
            f"projection {projection.label}: its code or schema changed since {info.table} was built "
            f"(fingerprint {info.fingerprint[:12]} recorded, {projection.fingerprint[:12]} now). Its rows would mix "
            f"two meanings, so nothing was written: bump the version (v{projection.version + 1}) for a new meaning, "
            f"or run `projectionist rebuild {projection.name} --version {projection.version}` to replace "
            f"{info.table} from the lake."
        )


@contextlib.contextmanager
def _events_until(
    con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint, after: Checkpoint | None = None
) -> Iterator[str]:
    """A temporary view of the lake's events up to ``checkpoint`` (so a concurrent ingest cannot leak in).

    With ``after``, of the events in ``(after, checkpoint]`` only.
    """
    view = f"_events_{uuid.uuid4().hex[:12]}"
    tx, position = int(checkpoint.transaction_id), int(checkpoint.global_position)
    # The plain bound on transaction_id reaches the Parquet scan (files and row groups beyond it are
    # skipped); an OR of both columns alone would be applied after reading every row.
    where = f"transaction_id <= {tx} AND (transaction_id < {tx} OR global_position <= {position})"
    if after is not None:
        where = _in_range(after, checkpoint)
    con.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM {EVENTS} WHERE {where}")
    try:
        yield view
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")


def _write_dead_letters(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    poison: Sequence[PoisonEvent],
    at: datetime,
    table: str = "meta.dead_letters",
) -> None:
    if poison:
        con.executemany(
            f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?, ?)",
            [[p.event_id, p.global_position, projection.name, projection.version, p.reason, at] for p in poison],
        )


def _unrecorded(
    con: duckdb.DuckDBPyConnection, projection: Projection, poison: Sequence[PoisonEvent]
) -> list[PoisonEvent]:
    """The events of ``poison`` not yet dead-lettered for this version (a stream touched again reports its old ones)."""
    if not poison:
        return []
    recorded = {
        str(r[0])
        for r in con.execute(
            "SELECT event_id FROM meta.dead_letters WHERE projection = ? AND version = ? AND event_id IN "
            "(SELECT unnest(?::VARCHAR[]))",
            [projection.name, projection.version, [p.event_id for p in poison]],
        ).fetchall()
    }
    return [p for p in poison if p.event_id not in recorded]


def _table_ddl(projection: Projection, table: str) -> list[str]:
    columns = ", ".join(f"{c.name} {c.type}" for c in projection.output_columns)
    table_comment = f"{projection.name} v{projection.version}: {projection.description}"
    statements = [
        f"CREATE OR REPLACE TABLE {table} ({columns})",
        f"COMMENT ON TABLE {table} IS {quote_literal(table_comment)}",
    ]
    statements += [comment_column(table, c.name, c.description) for c in projection.output_columns]
    return statements


def _upsert_version(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    state: str,
    checkpoint: Checkpoint,
    rows: int,
    built_at: datetime | None,
    seconds: float | None,
) -> None:
    con.execute(
        "DELETE FROM meta.projection_versions WHERE name = ? AND version = ?", [projection.name, projection.version]
    )
    con.execute(
        "INSERT INTO meta.projection_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, get_current_timestamp())",
        [
            projection.name,
            projection.version,
            state,
            projection.fingerprint,
            checkpoint.transaction_id,
            checkpoint.global_position,
            rows,
            built_at,
            seconds,
        ],
    )


def _in_range(after: Checkpoint, until: Checkpoint) -> str:
    """SQL: the event is in ``(after, until]`` in the lake's order."""
    a_tx, a_pos = int(after.transaction_id), int(after.global_position)
    u_tx, u_pos = int(until.transaction_id), int(until.global_position)
    return (
        f"transaction_id >= {a_tx} AND transaction_id <= {u_tx} "
        f"AND (transaction_id > {a_tx} OR global_position > {a_pos}) "
        f"AND (transaction_id < {u_tx} OR global_position <= {u_pos})"
    )


def _count_events(con: duckdb.DuckDBPyConnection, after: Checkpoint, until: Checkpoint) -> int:
    row = con.execute(f"SELECT count(*) FROM {EVENTS} WHERE {_in_range(after, until)}").fetchone()
    return int(row[0]) if row else 0


def _staging(name: str, version: int) -> str:
    return f"projections._staging_{name}_v{version}"


@dataclass(frozen=True)
class _Plan:
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


def _plan_fingerprint(registry: Registry) -> str:
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


def _plan(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    chunk_events: int | None,
    row: list[str] | None,
    checkpoint: list[int] | None,
) -> _Plan:
    """Continue the interrupted run in ``row`` (of meta.rebuilds) if it built the same thing, else start afresh."""
    name, version = projection.name, projection.version
    if (
        row is not None
        and row[0] == projection.fingerprint
        and row[1] == _plan_fingerprint(registry)
        and _exists(con, "projections", _staging(name, version).split(".")[1])
    ):
        return _Plan(
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
    boundaries = _boundaries(con, until, chunks) if chunks > 1 else ()
    stale = (str(row[2]), int(row[7])) if row is not None else None
    return _Plan(until, events, boundaries, 0, 0, 0, 0, 0.0, uuid.uuid4().hex, True, stale)


def _boundaries(con: duckdb.DuckDBPyConnection, until: Checkpoint, chunks: int) -> tuple[str, ...]:
    """Stream ids splitting the events up to ``until`` into ``chunks`` ranges of about as many events.

    Ranges rather than a hash of the stream: a range is a plain comparison DuckDB pushes into the
    Parquet scan through the views, so each chunk decodes only its own events' columns (a hash
    filter was applied after the scan, measured). Quantiles of a sample of events are close enough.
    """
    cuts = ", ".join(f"{i / chunks!r}" for i in range(1, chunks))
    row = con.execute(
        f"SELECT quantile_disc(stream_id, [{cuts}]) FROM (SELECT stream_id FROM {EVENTS} "
        f"WHERE {_in_range(START, until)} USING SAMPLE reservoir(20000 ROWS) REPEATABLE (7)) AS sample"
    ).fetchone()
    return tuple(sorted({str(b) for b in row[0] if b is not None})) if row and row[0] else ()


@contextlib.contextmanager
def _chunk_of(con: duckdb.DuckDBPyConnection, events: str, chunk: int, plan: _Plan) -> Iterator[str]:
    """A temporary view of the events of chunk ``chunk``: the streams of its range."""
    if plan.chunks == 1:
        yield events
        return
    view = f"_chunk_{uuid.uuid4().hex[:12]}"
    con.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM {events} WHERE {_chunk_range(plan, chunk)}")
    try:
        yield view
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")


def _chunk_range(plan: _Plan, chunk: int) -> str:
    """SQL: the stream is in chunk ``chunk`` (the first chunk also takes NULL stream ids, should there be any)."""
    bounds = plan.boundaries
    low = f"stream_id >= {quote_literal(bounds[chunk - 1])}" if chunk > 0 else None
    high = f"stream_id < {quote_literal(bounds[chunk])}" if chunk < len(bounds) else None
    if low is None:
        return f"({high} OR stream_id IS NULL)"
    return low if high is None else f"{low} AND {high}"


def _chunk_sizes(con: duckdb.DuckDBPyConnection, events: str, plan: _Plan) -> list[int]:
    if plan.chunks == 1:
        return [plan.events]
    which = " ".join(f"WHEN {_chunk_range(plan, chunk)} THEN {chunk}" for chunk in range(plan.chunks))
    counts = dict(con.execute(f"SELECT CASE {which} END, count(*) FROM {events} GROUP BY ALL").fetchall())
    return [int(counts.get(chunk, 0)) for chunk in range(plan.chunks)]


def rebuild(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    version: int,
    *,
    progress: Callable[[int], None] | None = None,
    chunk_events: int | None = None,
) -> ProjectResult:
    """Build ``projections.<name>_v<version>`` from the lake's events (building → ready; a live one stays live).

    The streams are split into chunks of about ``chunk_events`` events (default
    :data:`CHUNK_EVENTS` of the body's kind), each committed to a staging table; ``progress`` is
    called after each commit with that chunk's events. The last commit swaps the staging table in
    with the row count, state, checkpoint and dead letters, so readers of the version see the old
    table until then. A rerun after a crash continues after the last committed chunk (up to the
    same checkpoint; ``progress`` first gets the events already done) unless the projection's code
    or the upcasters changed, and gives the same table as an uninterrupted rebuild. Poison events
    follow the projection's ``poison.rebuild`` policy (default ``stop``).
    """
    projection = validate_target(registry, name, version)
    if chunk_events is not None and chunk_events < 1:
        raise ConfigurationError(f"chunk_events must be 1 or more, not {chunk_events}.")
    started = time.monotonic()
    # The plan is read in a transaction that, for the common rebuild (one chunk, of a version that
    # exists), goes on to compute, swap and commit: one snapshot of the catalog instead of two
    # (each costs 40-50 ms of catalog reads, measured). Otherwise it only reads.
    at_once, first_check = False, CHECKS[0]
    con.execute("BEGIN")
    try:
        try:
            read = con.execute(_START, [name, version, INGEST_CONSUMER]).fetchone()
        except duckdb.CatalogException:  # a new lake, or one from before a meta table was added
            con.execute("ROLLBACK")
            ensure_version_tables(con)
            con.execute("BEGIN")
            read = con.execute(_START, [name, version, INGEST_CONSUMER]).fetchone()
        assert read is not None
        state, interrupted, checkpoint, letters = read
        plan = _plan(con, registry, projection, chunk_events, interrupted, checkpoint)
        # A version seen for the first time (or still building) is first marked as building, in a
        # commit of its own, so that `status` shows it while it builds.
        at_once = plan.chunks == 1 and plan.chunks_done == 0 and state not in (None, "building", "dropped")
        if at_once:
            row = (plan.expected, state, letters)  # what _write_chunk's transaction would read
            with _events_until(con, plan.until) as events:
                work = _Chunk(
                    con, registry, projection, plan, 0, events, plan.events, (0, 0, time.monotonic() - started)
                )
                inserted = _commit_chunk(work, CHECKS[0], row)
            con.execute("COMMIT")
            if progress is not None:
                progress(plan.events)
            seconds = time.monotonic() - started
            rows = inserted.rows
            return ProjectResult(name, version, plan.events, rows, rows, plan.until, len(inserted.poison), seconds)
        con.execute("ROLLBACK")
    except (duckdb.Error, *DATA_ERRORS) as exc:
        rollback_transaction(con)
        if not (at_once and (isinstance(exc, DATA_ERRORS) or is_conflict(exc))):
            raise
        # The rest goes the general way: the next check names the poison; a lost conflict is retried.
        first_check = CHECKS[1] if isinstance(exc, DATA_ERRORS) else CHECKS[0]
    except BaseException:
        rollback_transaction(con)
        raise
    if state is None or state in ("building", "dropped"):

        def mark() -> None:
            with transaction(con):
                _upsert_version(con, projection, "building", START, 0, None, None)

        retry_conflicts(mark, f"marking {projection.label} as building")
    if plan.chunks_done and progress is not None:
        progress(plan.events_done)
    rows, dead = plan.rows, plan.dead_letters
    with _events_until(con, plan.until) as events:
        sizes = _chunk_sizes(con, events, plan)
        try:
            for chunk in range(plan.chunks_done, plan.chunks):
                with _chunk_of(con, events, chunk, plan) as chunk_view:
                    done = rows, dead, plan.seconds + time.monotonic() - started
                    work = _Chunk(con, registry, projection, plan, chunk, chunk_view, sizes[chunk], done)
                    inserted = _write_chunk(work, first_check)
                rows, dead = rows + inserted.rows, dead + len(inserted.poison)
                if progress is not None:
                    progress(sizes[chunk])
        except PoisonEventError as exc:
            named = _first_poison(con, registry, projection, events, plan, exc)
            if named is exc:
                raise
            raise named from exc
    return ProjectResult(
        name,
        version,
        plan.events,
        rows,
        rows,
        plan.until,
        dead,
        time.monotonic() - started,
        plan.chunks,
        plan.chunks_done,
    )


def _first_poison(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    events: str,
    plan: _Plan,
    error: PoisonEventError,
) -> PoisonEventError:
    """The error naming the first poison event of all chunks (a chunk only knows its own)."""
    if plan.chunks == 1:
        return error
    poison = find_poison(con, projection, events, upcasters=registry.upcasters)
    if not poison:
        return error  # a fold's evolve raised: its chunk's first is all there is to say
    return poison_stop_error(projection, poison)


@dataclass(frozen=True)
class _Chunk:
    """One chunk of a rebuild and what computing and committing it needs."""

    con: duckdb.DuckDBPyConnection
    registry: Registry
    projection: Projection
    plan: _Plan
    index: int
    events: str  # the relation of its events
    size: int  # how many events it holds
    done: tuple[int, int, float]  # what earlier chunks did: rows, dead letters, seconds


def _commit_chunk(work: _Chunk, check: Check, row: tuple[Any, ...]) -> InsertResult:
    """Inside an open transaction: compute the chunk into the staging table, or, the last one, swap it in.

    ``row`` is what the transaction read first: the ``[run_id, chunks_done]`` of the rebuild's row
    of meta.rebuilds, and for the last chunk the version's state and its count of dead letters.
    """
    started = time.monotonic()
    con, registry, projection, plan, chunk, size, done = (
        work.con, work.registry, work.projection, work.plan, work.index, work.size, work.done
    )  # fmt: skip
    name, version = projection.name, projection.version
    staging = _staging(name, version)
    final = chunk == plan.chunks - 1
    expected = plan.expected if chunk == plan.chunks_done else (plan.run_id, chunk)
    # Staged rows of meta.rebuilds and meta.rebuild_dead_letters exist only when an earlier chunk or an
    # earlier run wrote them: a rebuild of one chunk, the common case, never touches those tables.
    staged = plan.chunks > 1 or plan.expected is not None
    if (None if row[0] is None else (str(row[0][0]), int(row[0][1]))) != expected:
        raise LakeUnavailableError(
            f"another rebuild of {projection.label} moved its progress in meta.rebuilds meanwhile: let it "
            f"finish, then rerun `projectionist rebuild {name} --version {version}` if needed."
        )
    if plan.fresh and chunk == 0:
        if plan.expected is not None:  # an interrupted run of other code: start over
            con.execute("DELETE FROM meta.rebuilds WHERE name = ? AND version = ?", [name, version])
            con.execute("DELETE FROM meta.rebuild_dead_letters WHERE projection = ? AND version = ?", [name, version])
        for statement in _table_ddl(projection, staging):
            con.execute(statement)
    inserted = compute_into(
        con,
        projection,
        work.events,
        staging,
        upcasters=registry.upcasters,
        policy=projection.poison.rebuild,
        check=check,
    )
    at = datetime.now(UTC)
    rows, dead = done[0] + inserted.rows, done[1] + len(inserted.poison)
    seconds = done[2] + time.monotonic() - started
    if final:
        live, letters = row[1] == "live", bool(row[2])
        # Dead letters staged by earlier chunks (of this run or an interrupted one) move in too.
        moved = staged and done[1] > 0
        _swap_in(con, projection, inserted.poison, plan.until, rows, at, seconds, live, staged, moved, letters)
        return inserted
    _write_dead_letters(con, projection, inserted.poison, at, "meta.rebuild_dead_letters")
    if plan.fresh and chunk == 0:
        con.execute(
            "INSERT INTO meta.rebuilds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            [
                name,
                version,
                projection.fingerprint,
                _plan_fingerprint(registry),
                plan.run_id,
                plan.until.transaction_id,
                plan.until.global_position,
                plan.events,
                plan.chunks,
                json.dumps(plan.boundaries),
                size,
                rows,
                dead,
                seconds,
                at,
                at,
            ],
        )
    else:
        con.execute(
            "UPDATE meta.rebuilds SET chunks_done = chunks_done + 1, events_done = events_done + ?, "
            "rows = ?, dead_letters = ?, seconds = ?, updated_at = ? WHERE name = ? AND version = ?",
            [size, rows, dead, seconds, at, name, version],
        )
    return inserted


def _write_chunk(work: _Chunk, first_check: Check = CHECKS[0]) -> InsertResult:
    """Compute the chunk and commit it: to the staging table, or, the last one, swapped in with the rest."""
    con, name, version = work.con, work.projection.name, work.projection.version
    final = work.index == work.plan.chunks - 1
    # The last commit also needs the version's state and whether it has dead letters to replace.
    # (FILTER rather than WHERE: see _START.)
    read = (
        "SELECT (SELECT any_value([run_id, chunks_done::VARCHAR]) FILTER (WHERE name = $1 AND version = $2) "
        "FROM meta.rebuilds)"
    ) + (
        ", (SELECT any_value(state) FILTER (WHERE name = $1 AND version = $2) FROM meta.projection_versions), "
        "(SELECT count(*) FILTER (WHERE projection = $1 AND version = $2) FROM meta.dead_letters)"
        if final
        else ""
    )

    def commit(check: Check) -> InsertResult:
        with transaction(con):
            row = con.execute(read, [name, version]).fetchone()
            assert row is not None
            return _commit_chunk(work, check, row)

    what = f"writing chunk {work.index + 1} of {work.plan.chunks} of {_table(name, version)}"
    checks = CHECKS[CHECKS.index(first_check) :]
    for check in checks:
        try:
            return retry_conflicts(functools.partial(commit, check), what)
        except DATA_ERRORS:
            # The transaction is rolled back; the next check names the poison (or the overflowing value).
            if check == checks[-1]:
                raise
    raise AssertionError("unreachable")


def _swap_in(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    poison: Sequence[PoisonEvent],
    until: Checkpoint,
    rows: int,
    at: datetime,
    seconds: float,
    live: bool,
    staged: bool,
    moved: bool,
    letters: bool,
) -> None:
    """The last commit of a rebuild: staging table → ``projections.<name>_v<N>``, dead letters, state, checkpoint.

    ``live``: the version is live (it stays so); ``staged``: an earlier chunk or run may have written its
    row of meta.rebuilds; ``moved``: and dead letters to meta.rebuild_dead_letters; ``letters``: the version
    has dead letters to replace.
    """
    name, version = projection.name, projection.version
    if letters:
        con.execute("DELETE FROM meta.dead_letters WHERE projection = ? AND version = ?", [name, version])
    if moved:
        con.execute(
            "INSERT INTO meta.dead_letters SELECT * FROM meta.rebuild_dead_letters "
            "WHERE projection = ? AND version = ?",
            [name, version],
        )
        con.execute("DELETE FROM meta.rebuild_dead_letters WHERE projection = ? AND version = ?", [name, version])
    if staged:
        con.execute("DELETE FROM meta.rebuilds WHERE name = ? AND version = ?", [name, version])
    _write_dead_letters(con, projection, poison, at)
    # Dropping and renaming in one DuckLake commit: a reader (analytics.<name> included) sees the
    # old table or the new one, never neither (tested under a reader loop).
    con.execute(f"DROP TABLE IF EXISTS {_table(name, version)}")
    con.execute(f"ALTER TABLE {_staging(name, version)} RENAME TO {projection.table_name}")
    state = "live" if live else "ready"
    updated = con.execute(
        "UPDATE meta.projection_versions SET state = ?, fingerprint = ?, transaction_id = ?, global_position = ?, "
        "rows = ?, built_at = ?, build_seconds = ?, updated_at = get_current_timestamp() "
        "WHERE name = ? AND version = ?",
        [state, projection.fingerprint, until.transaction_id, until.global_position, rows, at, seconds, name, version],
    ).fetchone()
    if not updated or not updated[0]:
        _upsert_version(con, projection, state, until, rows, at, seconds)


def resumable_rebuild(
    con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int
) -> UnfinishedRebuild | None:
    """The unfinished rebuild that :func:`rebuild` of ``name`` v``version`` would continue, if any (reads only)."""
    projection = validate_target(registry, name, version)
    found = next((u for u in unfinished_rebuilds(con, name) if u.version == version), None)
    if found is None or found.fingerprint != projection.fingerprint:
        return None
    row = con.execute("SELECT plan FROM meta.rebuilds WHERE name = ? AND version = ?", [name, version]).fetchone()
    if row is None or row[0] != _plan_fingerprint(registry):
        return None
    return found if _exists(con, "projections", _staging(name, version).split(".")[1]) else None


def unfinished_rebuilds(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[UnfinishedRebuild]:
    """Rebuilds (of ``name``, or all) with committed chunks and more to go, by name and version (reads only)."""
    if not _exists(con, "meta", "rebuilds"):
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


def _delete_keys(con: duckdb.DuckDBPyConnection, table: str, projection: Projection, keys_view: str) -> None:
    match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM k.{k}" for k in projection.key)
    con.execute(f"DELETE FROM {table} AS t WHERE EXISTS (SELECT 1 FROM {keys_view} AS k WHERE {match})")


def _advance(
    con: duckdb.DuckDBPyConnection, registry: Registry, projection: Projection, info: VersionInfo, until: Checkpoint
) -> ProjectResult | None:
    """Replace the rows of the keys touched in ``(info.checkpoint, until]`` and move the checkpoint, in one commit.

    None when another process moved the version's checkpoint first (its commit stands).
    """
    started = time.monotonic()
    after = info.checkpoint
    with _events_until(con, until) as events:
        keys = touched_keys(con, projection, events, after, until, upcasters=registry.upcasters)
        result = (
            compute(con, projection, events, keys, upcasters=registry.upcasters, policy=projection.poison.live)
            if keys.num_rows
            else None
        )
        # A poison event of a stream that contributes to no key without it (a cart whose only item is
        # poison, in a projection of confirmed carts' items) is in no computation above: the new
        # events are checked on their own too, so each one is projected or dead-lettered, as in a rebuild.
        computed = {p.event_id for p in result.poison} if result else set()
        with _events_until(con, until, after) as new_events:
            found = find_poison(con, projection, new_events, upcasters=registry.upcasters)
        stray = [p for p in found if p.event_id not in computed]
        if stray and projection.poison.live == "stop":
            raise poison_stop_error(projection, stray)
        poison = [*(result.poison if result else ()), *stray]
        n_events = _count_events(con, after, until)
    at = datetime.now(UTC)

    def commit() -> int | None:
        with transaction(con):
            current = con.execute(
                "SELECT transaction_id, global_position, state FROM meta.projection_versions "
                "WHERE name = ? AND version = ?",
                [info.name, info.version],
            ).fetchone()
            if current is None or Checkpoint(int(current[0]), int(current[1])) != after or current[2] == "dropped":
                return None  # another process advanced (or rebuilt, or dropped) it meanwhile: its commit stands
            if result is not None:
                con.register("_touched_keys", keys)
                con.register("_touched_rows", result.rows)
                try:
                    _delete_keys(con, info.table, projection, "_touched_keys")
                    con.execute(f"INSERT INTO {info.table} SELECT * FROM _touched_rows")
                finally:
                    con.unregister("_touched_keys")
                    con.unregister("_touched_rows")
            _write_dead_letters(con, projection, _unrecorded(con, projection, poison), at)
            row = con.execute(f"SELECT count(*) FROM {info.table}").fetchone()
            rows = int(row[0]) if row else 0
            con.execute(
                "UPDATE meta.projection_versions SET transaction_id = ?, global_position = ?, rows = ?, "
                "updated_at = get_current_timestamp() WHERE name = ? AND version = ?",
                [until.transaction_id, until.global_position, rows, info.name, info.version],
            )
            return rows

    rows = retry_conflicts(commit, f"updating {info.table}")
    if rows is None:
        return None
    return ProjectResult(
        info.name,
        info.version,
        n_events,
        keys.num_rows,
        rows,
        until,
        len(poison),
        time.monotonic() - started,
    )


def project(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    *,
    names: Sequence[str] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[ProjectResult]:
    """Advance every live and ready version to the lake's ingest checkpoint, recomputing only touched keys.

    A registered projection with no version in the lake at all gets its highest version built and
    promoted (its first promotion needs no comparison). Versions not built yet are rebuild's job.
    """
    chosen = list(names) if names is not None else registry.names()
    for name in chosen:
        validate_target(registry, name)

    # Every version and the ingest checkpoint in one read, from one snapshot: with nothing new (an
    # idle `follow` cycle) this is all a call costs. A statement per projection, each in its own
    # transaction, took about 85 ms for the demo's projections; this takes about 15 (measured).
    def read() -> tuple[list[tuple[Any, ...]], Checkpoint]:
        with transaction(con):
            return con.execute(_ALL_VERSIONS).fetchall(), lake_checkpoint(con)[0]

    try:
        versions, until = read()
    except duckdb.CatalogException:  # a new lake, or one from before the version tables
        ensure_version_tables(con)
        versions, until = read()
    by_name: dict[str, list[VersionInfo]] = {}
    for row in versions:
        by_name.setdefault(str(row[0]), []).append(_info(row))
    results: list[ProjectResult] = []
    for name in chosen:
        recorded = by_name.get(name, [])
        if not recorded:
            projection = registry.get(name)
            results.append(rebuild(con, registry, name, projection.version))
            promote(con, registry, name, projection.version, force=True, actor="project (first version)")
            if progress is not None:
                progress(f"{projection.table_name} built and promoted", results[-1].rows)
            continue
        for info in recorded:
            if info.state not in ("live", "ready"):
                continue
            if info.version not in registry.versions(name):
                continue  # its module is gone: it keeps its rows but can no longer advance
            projection = registry.get(name, info.version)
            _check_fingerprint(projection, info)
            if (until.transaction_id, until.global_position) <= (
                info.checkpoint.transaction_id,
                info.checkpoint.global_position,
            ):
                continue
            result = _advance(con, registry, projection, info, until)
            if result is None:
                continue
            results.append(result)
            if progress is not None:
                progress(projection.table_name, result.events)
    return results


def _idle(info: VersionInfo) -> ProjectResult:
    """The result of a call that found nothing to do for ``info``: no event, no key, its rows and checkpoint."""
    return ProjectResult(info.name, info.version, 0, 0, info.rows, info.checkpoint, 0, 0.0)


def advance_version(con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int) -> ProjectResult:
    """Bring one recorded version of ``name`` up to the lake's ingest checkpoint, as :func:`project` does.

    Always a result: one with zero events when the version is already there, is not advancing
    (``retired``, ``building``, ``dropped``) or was advanced by another process meanwhile, so a
    scheduled run against an idle store records "nothing to do" instead of failing. A version the
    lake does not hold is refused (:class:`ConfigurationError`): it needs a rebuild first.
    """
    projection = validate_target(registry, name, version)

    def read() -> tuple[tuple[Any, ...] | None, Checkpoint]:
        with transaction(con):
            row = con.execute(
                f"SELECT {_VERSION_COLUMNS} FROM meta.projection_versions WHERE name = ? AND version = ?",
                [name, version],
            ).fetchone()
            return row, lake_checkpoint(con)[0]

    try:
        row, until = read()
    except duckdb.CatalogException:  # a lake from before the version tables
        row = None
    if row is None:
        raise ConfigurationError(
            f"{projection.table_name} is not in the lake yet: rebuild it first "
            f"(`projectionist rebuild {name} --version {version}`)."
        )
    info = _info(row)
    if info.state not in ("live", "ready"):
        return _idle(info)
    _check_fingerprint(projection, info)
    if (until.transaction_id, until.global_position) <= (
        info.checkpoint.transaction_id,
        info.checkpoint.global_position,
    ):
        return _idle(info)
    result = _advance(con, registry, projection, info, until)
    if result is not None:
        return result
    now = _version(con, name, version)  # another process advanced it first: report where it is now
    return _idle(now if now is not None else info)


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def latest_comparison(
    con: duckdb.DuckDBPyConnection, a_table: str, b_table: str, newer_than: datetime | None
) -> str | None:
    """The id of the newest comparison of ``a_table`` against ``b_table`` made after ``newer_than``.

    Comparisons record their time to the second, so one made in the second of a build counts as newer.
    """
    if not _exists(con, "meta", "comparisons"):
        return None
    row = con.execute(
        "SELECT comparison_id::VARCHAR FROM meta.comparisons WHERE a IN (?, ?) AND b IN (?, ?) "
        "AND (?::TIMESTAMPTZ IS NULL OR created_at >= date_trunc('second', ?::TIMESTAMPTZ)) "
        "ORDER BY created_at DESC LIMIT 1",
        [a_table, f"lake.{a_table}", b_table, f"lake.{b_table}", newer_than, newer_than],
    ).fetchone()
    return str(row[0]) if row else None


def _swap(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    from_version: int | None,
    actor: str,
    comparison_id: str | None,
) -> Promotion:
    at = datetime.now(UTC)
    name, version = projection.name, projection.version

    def commit() -> None:
        with transaction(con):
            con.execute(f"CREATE OR REPLACE VIEW analytics.{name} AS SELECT * FROM {_table(name, version)}")
            con.execute(
                f"COMMENT ON VIEW analytics.{name} IS "
                f"{quote_literal(f'{projection.description} (live: {_table(name, version)})')}"
            )
            set_view_column_comments(
                con, "analytics", name, [(c.name, c.description) for c in projection.output_columns]
            )
            con.execute(
                "UPDATE meta.projection_versions SET state = 'retired', updated_at = get_current_timestamp() "
                "WHERE name = ? AND state = 'live' AND version <> ?",
                [name, version],
            )
            con.execute(
                "UPDATE meta.projection_versions SET state = 'live', updated_at = get_current_timestamp() "
                "WHERE name = ? AND version = ?",
                [name, version],
            )
            con.execute(
                "INSERT INTO meta.promotions VALUES (?, ?, ?, ?, ?, ?)",
                [name, from_version, version, at, actor, comparison_id],
            )

    retry_conflicts(commit, f"promoting {name} v{version}")
    return Promotion(name, from_version, version, at, actor, comparison_id)


def promote(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    version: int,
    *,
    force: bool = False,
    actor: str | None = None,
) -> Promotion:
    """Make ``version`` live: ``analytics.<name>`` swaps to it atomically; the previous live one is retired.

    Unless ``force``, a comparison of the live version against this one, recorded after both were
    built (``projectionist diff``), is required; a projection's first promotion needs none.
    """
    projection = validate_target(registry, name, version)
    ensure_version_tables(con)
    info = _version(con, name, version)
    if info is None or info.state in ("building", "dropped"):
        state = "not built" if info is None else info.state
        raise PromotionError(
            f"{name} v{version} is {state}, not ready: run `projectionist rebuild {name} --version {version}` first."
        )
    _check_fingerprint(projection, info)
    live = _live(con, name)
    if live is not None and live.version == version:
        raise PromotionError(f"{name} v{version} is already live.")
    comparison_id: str | None = None
    if live is not None:
        newest = max((t for t in (live.built_at, info.built_at) if t is not None), default=None)
        comparison_id = latest_comparison(con, live.table, info.table, newest)
        if comparison_id is None and not force:
            raise PromotionError(
                f"{name} v{version} has no comparison against the live v{live.version} newer than both builds: run "
                f"`projectionist diff {name} {live.version} {version}` and check it, then promote again "
                "(or pass --force)."
            )
    return _swap(con, projection, live.version if live else None, _actor(actor), comparison_id)


def rollback(
    con: duckdb.DuckDBPyConnection, name: str, *, actor: str | None = None, registry: Registry | None = None
) -> Promotion:
    """Make the previous live version of ``name`` live again (its table must still exist).

    A retired version is no longer kept current; with ``registry`` it is first brought up to the
    lake's checkpoint, so the rollback serves current rows (without, the next ``project`` does it).
    """
    ensure_version_tables(con)
    live = _live(con, name)
    if live is None:
        raise PromotionError(f"{name} has no live version to roll back.")
    row = con.execute(
        "SELECT from_version FROM meta.promotions WHERE name = ? AND to_version = ? ORDER BY promoted_at DESC LIMIT 1",
        [name, live.version],
    ).fetchone()
    if row is None or row[0] is None:
        raise PromotionError(f"{name} v{live.version} was its first live version: there is nothing to roll back to.")
    previous = _version(con, name, int(row[0]))
    if previous is None or previous.state not in ("retired", "ready"):
        state = "gone" if previous is None else previous.state
        raise PromotionError(f"{name} v{row[0]} is {state}: it can no longer be rolled back to.")
    if registry is not None and previous.version in registry.versions(name):
        projection = registry.get(name, previous.version)
        _check_fingerprint(projection, previous)
        until, _ = lake_checkpoint(con)
        if (until.transaction_id, until.global_position) > (
            previous.checkpoint.transaction_id,
            previous.checkpoint.global_position,
        ):
            _advance(con, registry, projection, previous, until)
    # Rolling back restores what was live before; its comments come from the table itself.
    description_row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'projections' "
        "AND table_name = ?",
        [f"{name}_v{previous.version}"],
    ).fetchone()
    columns = con.execute(
        "SELECT column_name, comment FROM duckdb_columns() WHERE database_name = 'lake' "
        "AND schema_name = 'projections' AND table_name = ? ORDER BY column_index",
        [f"{name}_v{previous.version}"],
    ).fetchall()
    at = datetime.now(UTC)
    who = _actor(actor)

    def commit() -> None:
        with transaction(con):
            con.execute(f"CREATE OR REPLACE VIEW analytics.{name} AS SELECT * FROM {previous.table}")
            comment = str(description_row[0]) if description_row and description_row[0] else previous.table
            con.execute(f"COMMENT ON VIEW analytics.{name} IS {quote_literal(comment)}")
            set_view_column_comments(con, "analytics", name, [(str(c), str(d or "")) for c, d in columns])
            con.execute(
                "UPDATE meta.projection_versions SET state = 'retired', updated_at = get_current_timestamp() "
                "WHERE name = ? AND version = ?",
                [name, live.version],
            )
            con.execute(
                "UPDATE meta.projection_versions SET state = 'live', updated_at = get_current_timestamp() "
                "WHERE name = ? AND version = ?",
                [name, previous.version],
            )
            con.execute(
                "INSERT INTO meta.promotions VALUES (?, ?, ?, ?, ?, ?)",
                [name, live.version, previous.version, at, who, None],
            )

    retry_conflicts(commit, f"rolling back {name}")
    return Promotion(name, live.version, previous.version, at, who, None)


def retain(con: duckdb.DuckDBPyConnection, name: str, keep: int) -> list[int]:
    """Drop the tables of ``name``'s retired versions beyond the newest ``keep``; return their versions."""
    if keep < 0:
        raise ConfigurationError(f"--keep must be 0 or more, not {keep}.")
    retired = sorted((v.version for v in list_versions(con, name) if v.state == "retired"), reverse=True)
    doomed = retired[keep:]
    if not doomed:
        return []

    def commit() -> None:
        with transaction(con):
            for version in doomed:
                con.execute(f"DROP TABLE IF EXISTS {_table(name, version)}")
                con.execute(
                    "UPDATE meta.projection_versions SET state = 'dropped', updated_at = get_current_timestamp() "
                    "WHERE name = ? AND version = ?",
                    [name, version],
                )

    retry_conflicts(commit, f"dropping retired versions of {name}")
    return doomed


def dead_letters(
    con: duckdb.DuckDBPyConnection, *, name: str | None = None, since: datetime | None = None
) -> list[DeadLetter]:
    """Dead-lettered events (of projection ``name``, since ``since``), newest first (reads only)."""
    if not _exists(con, "meta", "dead_letters"):
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


def lag(con: duckdb.DuckDBPyConnection, name: str, version: int) -> tuple[int, float | None]:
    """Events, and seconds (since the oldest of them was recorded), version ``version`` is behind ingest."""
    info = _version(con, name, version)
    if info is None:
        raise ConfigurationError(f"{name} v{version} is not in the lake: run `projectionist rebuild` first.")
    until, _ = lake_checkpoint(con)
    after = info.checkpoint
    row = con.execute(f"SELECT count(*), min(recorded_at) FROM {EVENTS} WHERE {_in_range(after, until)}").fetchone()
    if row is None or not row[0]:
        return 0, None
    oldest: datetime = row[1]
    return int(row[0]), max(0.0, (datetime.now(UTC) - oldest).total_seconds())
