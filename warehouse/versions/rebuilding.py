"""The chunked rebuild: a version's table built from the lake's events, chunk by chunk, through a staging table.

Each chunk (see :mod:`warehouse.versions.rebuild_plan`) is computed into
``projections._staging_<name>_v<N>`` and committed with its progress in ``meta.rebuilds``; the last
commit renames the staging table over ``projections.<name>_v<N>`` together with the row count,
state, checkpoint and dead letters. The projections engine decides which poison checks a chunk
goes through (:func:`projections.engine.escalate`); this module chunks, and retries lost conflicts.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.positions import START, Checkpoint
from eventstore.quoting import quote_literal
from projections import CHECKS, DATA_ERRORS, InsertResult, PoisonEvent, Projection, Registry, compute_into
from projections.engine import Check, escalate, first_poison_error
from projections.errors import PoisonEventError
from warehouse.errors import LakeUnavailableError
from warehouse.lake import comment_column, is_conflict, retry_conflicts, transaction
from warehouse.progress import EventProgress
from warehouse.versions.catalog import (
    ProjectResult,
    column_comment,
    ensure_version_tables,
    upsert_version,
    validate_target,
    version_table,
)
from warehouse.versions.dead_lettering import write_dead_letters
from warehouse.versions.lake_events import events_until
from warehouse.versions.rebuild_plan import (
    Plan,
    Start,
    chunk_of,
    chunk_sizes,
    plan_fingerprint,
    read_start,
    staging_table,
)

__all__ = ["rebuild", "swap_in", "table_ddl"]


def rebuild(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    version: int,
    *,
    progress: Callable[[int], None] | None = None,
    chunk_events: int | None = None,
    events_done: Callable[[int], None] | None = None,
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

    ``events_done``, for a bar, is called with each increment of the events done, inside chunks too
    (:class:`~warehouse.progress.EventProgress`: a rebuild of one chunk moves it as DuckDB scans),
    from a background thread or this one, never two at once.
    """
    projection = validate_target(registry, name, version)
    if chunk_events is not None and chunk_events < 1:
        raise ConfigurationError(f"chunk_events must be 1 or more, not {chunk_events}.")
    started = time.monotonic()
    with EventProgress(con, events_done) as watch:
        opening = _open(con, registry, projection, chunk_events, started, watch)
        plan = opening.start.plan
        if opening.inserted is not None:  # built at once, in the transaction that read the plan
            watch.commit(plan.events)
            if progress is not None:
                progress(plan.events)
            rows, dead = opening.inserted.rows, len(opening.inserted.poison)
            return ProjectResult(name, version, plan.events, rows, rows, plan.until, dead, time.monotonic() - started)
        if opening.start.state in (None, "building", "dropped"):

            def mark() -> None:
                with transaction(con):
                    upsert_version(con, projection, "building", START, 0, None, None)

            retry_conflicts(mark, f"marking {projection.label} as building")
        watch.commit(plan.events_done)
        if plan.chunks_done and progress is not None:
            progress(plan.events_done)
        rows, dead = _write_chunks(con, registry, projection, plan, opening.after, watch, progress, started)
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


@dataclass(frozen=True)
class _Opening:
    """What a rebuild's first transaction read, and what it did."""

    start: Start
    inserted: InsertResult | None = None  # the whole rebuild, done at once in that transaction
    after: Check | None = None  # the check that failed there on the events' data: the rest starts after it


def _open(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    chunk_events: int | None,
    started: float,
    watch: EventProgress,
    *,
    missing_ok: bool = True,
) -> _Opening:
    """The plan, read in a transaction that, for the common rebuild, goes on to compute, swap and commit.

    The common rebuild is one chunk, of a version that exists (:attr:`Start.at_once`): one snapshot
    of the catalog instead of two (each costs 40-50 ms of catalog reads, measured). Otherwise the
    transaction only reads. A meta table missing (a new lake, or one from before a meta table was
    added) is created first.
    """
    start: Start | None = None
    try:
        with transaction(con) as tx:
            start = read_start(con, registry, projection, chunk_events, missing_ok=missing_ok)
            if start is not None and start.at_once:
                row = (start.plan.expected, start.state, start.letters)  # what _write_chunk's transaction would read
                with events_until(con, start.plan.until) as events:
                    done = (0, 0, time.monotonic() - started)
                    work = _Chunk(con, registry, projection, start.plan, 0, events, start.plan.events, done, watch)
                    return _Opening(start, _commit_chunk(work, CHECKS[0], row))
            tx.abandon()
    except (duckdb.Error, *DATA_ERRORS) as exc:
        if start is None or not start.at_once or not (isinstance(exc, DATA_ERRORS) or is_conflict(exc)):
            raise
        # The rest goes the general way: the next check names the poison; a lost conflict is retried.
        return _Opening(start, after=CHECKS[0] if isinstance(exc, DATA_ERRORS) else None)
    if start is None:
        ensure_version_tables(con)
        return _open(con, registry, projection, chunk_events, started, watch, missing_ok=False)
    return _Opening(start)


def _write_chunks(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    plan: Plan,
    after: Check | None,
    watch: EventProgress,
    progress: Callable[[int], None] | None,
    started: float,
) -> tuple[int, int]:
    """Compute and commit the chunks not committed yet, one by one; the rows and dead letters of all chunks."""
    rows, dead = plan.rows, plan.dead_letters
    with events_until(con, plan.until) as events:
        sizes = chunk_sizes(con, events, plan)
        try:
            for chunk in range(plan.chunks_done, plan.chunks):
                with chunk_of(con, events, chunk, plan) as chunk_view:
                    done = rows, dead, plan.seconds + time.monotonic() - started
                    work = _Chunk(con, registry, projection, plan, chunk, chunk_view, sizes[chunk], done, watch)
                    inserted = _write_chunk(work, after)
                rows, dead = rows + inserted.rows, dead + len(inserted.poison)
                watch.commit(sizes[chunk])
                if progress is not None:
                    progress(sizes[chunk])
        except PoisonEventError as exc:
            if plan.chunks == 1:
                raise
            # A chunk only knows its own first poison event: the error names the first of all chunks.
            named = first_poison_error(con, projection, events, exc, upcasters=registry.upcasters)
            if named is exc:
                raise
            raise named from exc
    return rows, dead


@dataclass(frozen=True)
class _Chunk:
    """One chunk of a rebuild and what computing and committing it needs."""

    con: duckdb.DuckDBPyConnection
    registry: Registry
    projection: Projection
    plan: Plan
    index: int
    events: str  # the relation of its events
    size: int  # how many events it holds
    done: tuple[int, int, float]  # what earlier chunks did: rows, dead letters, seconds
    watch: EventProgress


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
    staging = staging_table(name, version)
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
        for statement in table_ddl(projection, staging):
            con.execute(statement)
    work.watch.begin(size)  # the events this chunk computes, for progress inside it
    inserted = compute_into(
        con,
        projection,
        work.events,
        staging,
        upcasters=registry.upcasters,
        policy=projection.poison.rebuild,
        check=check,
        seen=work.watch.seen,
    )
    at = datetime.now(UTC)
    rows, dead = done[0] + inserted.rows, done[1] + len(inserted.poison)
    seconds = done[2] + time.monotonic() - started
    if final:
        live, letters = row[1] == "live", bool(row[2])
        # Dead letters staged by earlier chunks (of this run or an interrupted one) move in too.
        moved = staged and done[1] > 0
        swap_in(con, projection, inserted.poison, plan.until, rows, at, seconds, live, staged, moved, letters)
        return inserted
    write_dead_letters(con, projection, inserted.poison, at, "meta.rebuild_dead_letters")
    if plan.fresh and chunk == 0:
        con.execute(
            "INSERT INTO meta.rebuilds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            [
                name,
                version,
                projection.fingerprint,
                plan_fingerprint(registry),
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


def _write_chunk(work: _Chunk, after: Check | None = None) -> InsertResult:
    """Compute the chunk and commit it: to the staging table, or, the last one, swapped in with the rest.

    Each check the engine escalates to runs in a transaction of its own (a failed statement aborts
    it), whose lost conflicts are retried; ``after``: a check that already failed on the chunk's data.
    """
    con, name, version = work.con, work.projection.name, work.projection.version
    final = work.index == work.plan.chunks - 1
    # The last commit also needs the version's state and whether it has dead letters to replace.
    # (FILTER rather than WHERE: see rebuild_plan._START.)
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

    what = f"writing chunk {work.index + 1} of {work.plan.chunks} of {version_table(name, version)}"
    # A check failing on the data leaves its transaction rolled back; the next check names the poison
    # (or the overflowing value).
    return escalate(lambda check: retry_conflicts(functools.partial(commit, check), what), after=after)


def swap_in(
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
    write_dead_letters(con, projection, poison, at)
    # Dropping and renaming in one DuckLake commit: a reader (analytics.<name> included) sees the
    # old table or the new one, never neither (tested under a reader loop).
    con.execute(f"DROP TABLE IF EXISTS {version_table(name, version)}")
    con.execute(f"ALTER TABLE {staging_table(name, version)} RENAME TO {projection.table_name}")
    state = "live" if live else "ready"
    updated = con.execute(
        "UPDATE meta.projection_versions SET state = ?, fingerprint = ?, transaction_id = ?, global_position = ?, "
        "rows = ?, built_at = ?, build_seconds = ?, updated_at = get_current_timestamp() "
        "WHERE name = ? AND version = ?",
        [state, projection.fingerprint, until.transaction_id, until.global_position, rows, at, seconds, name, version],
    ).fetchone()
    if not updated or not updated[0]:
        upsert_version(con, projection, state, until, rows, at, seconds)


def table_ddl(projection: Projection, table: str) -> list[str]:
    columns = ", ".join(f"{c.name} {c.type}" for c in projection.output_columns)
    table_comment = f"{projection.name} v{projection.version}: {projection.description}"
    statements = [
        f"CREATE OR REPLACE TABLE {table} ({columns})",
        f"COMMENT ON TABLE {table} IS {quote_literal(table_comment)}",
    ]
    statements += [comment_column(table, c.name, column_comment(c)) for c in projection.output_columns]
    return statements
