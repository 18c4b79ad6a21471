"""The incremental step of one version: recompute the keys its new events touch, and move its checkpoint."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from eventstore.positions import Checkpoint, in_range
from projections import Projection, Registry, compute, touched_keys
from projections.engine import keys_in, poison_besides, stream_contributions, touched_streams
from warehouse.lake import LAKE_ALIAS, retry_conflicts, transaction
from warehouse.versions.catalog import ProjectResult, VersionInfo
from warehouse.versions.cycle import CycleEvents
from warehouse.versions.dead_lettering import unrecorded, write_dead_letters
from warehouse.versions.lake_events import events_until, filtered_view

__all__ = ["StreamKeysCache", "advance_to", "forgotten_count"]

DEAD_LETTERS = f"{LAKE_ALIAS}.meta.dead_letters"


def _delete_keys(con: duckdb.DuckDBPyConnection, table: str, projection: Projection, keys_view: str) -> int:
    """Delete the rows of ``table`` whose key is in the relation ``keys_view``; returns how many."""
    match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM k.{k}" for k in projection.key)
    deleted = con.execute(f"DELETE FROM {table} AS t WHERE EXISTS (SELECT 1 FROM {keys_view} AS k WHERE {match})")
    row = deleted.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class _StreamKeys:
    """Which keys each stream contributes to (``stream_id`` + key columns), for one version at one checkpoint."""

    fingerprint: str
    checkpoint: Checkpoint
    forgotten: int
    table: pa.Table


class StreamKeysCache:
    """What a long-running advancer (``follow``) remembers between calls: each version's stream contributions.

    A version not keyed by stream recomputes a key from every stream contributing to it; finding those
    streams means knowing every stream's contributions, a pass over all the lake's events. The
    contributions of the events up to a checkpoint are a function of those events and of the code
    (the fingerprint), so an entry is valid while the version's checkpoint and fingerprint are the
    entry's and no ``forget`` rewrote events since (the count of ``meta.forgotten``); each advance
    then recomputes only the touched streams' part.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, int], _StreamKeys] = {}

    def get(self, info: VersionInfo, forgotten: int) -> pa.Table | None:
        entry = self._entries.get((info.name, info.version))
        if entry is None:
            return None
        if (entry.fingerprint, entry.checkpoint, entry.forgotten) != (info.fingerprint, info.checkpoint, forgotten):
            del self._entries[(info.name, info.version)]
            return None
        return entry.table

    def put(self, info: VersionInfo, checkpoint: Checkpoint, forgotten: int, table: pa.Table) -> None:
        self._entries[(info.name, info.version)] = _StreamKeys(info.fingerprint, checkpoint, forgotten, table)

    def checkpoint(self, name: str, version: int) -> Checkpoint | None:
        """Where the contributions kept for ``name`` v``version`` stand (None: none kept)."""
        entry = self._entries.get((name, version))
        return None if entry is None else entry.checkpoint

    def drop(self, info: VersionInfo) -> None:
        self._entries.pop((info.name, info.version), None)


def forgotten_count(con: duckdb.DuckDBPyConnection) -> int:
    """How many ``forget`` runs the lake records (:class:`StreamKeysCache`'s check that events are unchanged)."""
    try:
        row = con.execute(f"SELECT count(*) FROM {LAKE_ALIAS}.meta.forgotten").fetchone()
    except duckdb.CatalogException:  # no forget ever ran
        return 0
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class _Touched:
    """The keys an advance recomputes, the streams their rows are computed from, and the contributions after it."""

    keys: pa.Table
    streams: pa.Table | None = None  # None: keyed by stream, or found by compute over all the events
    contributions: pa.Table | None = None  # every stream's, up to ``until`` (for the cache)


def _touched(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    info: VersionInfo,
    until: Checkpoint,
    source: str,
    lake_events: str,
    known: pa.Table | None,
) -> _Touched:
    """The touched keys; with ``known`` (the contributions at the version's checkpoint), their streams too.

    ``source`` holds every event up to ``until`` of each stream touched in the range (the cycle's
    table, or the lake); ``lake_events`` every event up to ``until``.
    """
    after, upcasters = info.checkpoint, registry.upcasters
    if projection.keyed_by_stream or (known is None and source == lake_events):
        return _Touched(touched_keys(con, projection, source, after, until, upcasters=upcasters))
    touched = touched_streams(con, projection, source, after, until, upcasters=upcasters)
    now = stream_contributions(con, projection, source, streams=touched, bound=until, upcasters=upcasters)
    with _registered(con, touched) as touched_view:
        if known is None:
            # First advance of this process: the contributions at ``after`` of the touched streams from
            # their events, everyone's at ``until`` from a pass over the lake (kept for the next advances).
            before = stream_contributions(con, projection, source, streams=touched, bound=after, upcasters=upcasters)
            everyone = stream_contributions(con, projection, lake_events, bound=until, upcasters=upcasters)
            with _registered(con, everyone) as everyone_view:
                untouched = con.sql(
                    f"SELECT * FROM {everyone_view} WHERE stream_id NOT IN (SELECT stream_id FROM {touched_view})"
                ).to_arrow_table()
        else:
            with _registered(con, known) as known_view:
                before = con.sql(
                    f"SELECT * FROM {known_view} WHERE stream_id IN (SELECT stream_id FROM {touched_view})"
                ).to_arrow_table()
                untouched = con.sql(
                    f"SELECT * FROM {known_view} WHERE stream_id NOT IN (SELECT stream_id FROM {touched_view})"
                ).to_arrow_table()
    keys = keys_in(con, projection, before, now)
    contributions = pa.concat_tables([untouched, now.cast(untouched.schema)])
    match = " AND ".join(f"c.{k} IS NOT DISTINCT FROM k.{k}" for k in projection.key)
    with _registered(con, contributions) as all_view, _registered(con, keys) as keys_view:
        streams = con.sql(
            f"SELECT DISTINCT stream_id FROM {all_view} AS c SEMI JOIN {keys_view} AS k ON {match} ORDER BY 1"
        ).to_arrow_table()
    return _Touched(keys, streams, contributions)


def _rows_to_replace(
    con: duckdb.DuckDBPyConnection, projection: Projection, info: VersionInfo, keys: pa.Table, cycle: CycleEvents | None
) -> pa.Table:
    """The touched keys that may have a row: all but the new streams' keys (a version keyed by stream).

    Deleting by key reads the key column of the whole version table; a stream the cycle knows to be
    new (no event up to a checkpoint the version has not passed) has no row to delete.
    """
    if (
        not projection.keyed_by_stream
        or cycle is None
        or cycle.new_streams is None
        or cycle.new_after is None
        or info.checkpoint > cycle.new_after
        or not keys.num_rows
    ):
        return keys
    name = projection.key[0]
    kind = next(c.type for c in projection.columns if c.name == name)
    with _registered(con, keys) as keys_view:
        return con.sql(
            f"SELECT * FROM {keys_view} WHERE {name} NOT IN (SELECT CAST(stream_id AS {kind}) FROM {cycle.new_streams})"
        ).to_arrow_table()


@contextlib.contextmanager
def _registered(con: duckdb.DuckDBPyConnection, table: pa.Table) -> Iterator[str]:
    name = f"projectionist_{uuid.uuid4().hex}"
    con.register(name, table)
    try:
        yield name
    finally:
        con.unregister(name)


def advance_to(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    projection: Projection,
    info: VersionInfo,
    until: Checkpoint,
    *,
    cycle: CycleEvents | None = None,
    cache: StreamKeysCache | None = None,
    forgotten: int = 0,
) -> ProjectResult | None:
    """Replace the rows of the keys touched in ``(info.checkpoint, until]`` and move the checkpoint, in one commit.

    ``cycle``, when it covers the range, holds the touched streams' events (:mod:`cycle`), read once
    for every version advanced together; ``cache`` keeps each version's stream contributions from one
    call to the next (``forgotten``: :func:`forgotten_count` now). None when another process moved
    the version's checkpoint first (its commit stands).
    """
    started = time.monotonic()
    after = info.checkpoint
    with events_until(con, until) as lake_events:
        covered = cycle is not None and cycle.covers(after, until)
        source = cycle.table if cycle is not None and covered else lake_events
        known = cache.get(info, forgotten) if cache is not None and not projection.keyed_by_stream else None
        touched = _touched(con, registry, projection, info, until, source, lake_events, known)
        keys = touched.keys
        if not keys.num_rows:
            result = None
        elif touched.streams is not None:
            # The rows of the keys from their contributing streams' events only (the lake, filtered).
            result = compute(
                con,
                projection,
                lake_events,
                keys,
                upcasters=registry.upcasters,
                policy=projection.poison.live,
                streams=touched.streams,
            )
        else:
            result = compute(
                con,
                projection,
                source if projection.keyed_by_stream else lake_events,
                keys,
                upcasters=registry.upcasters,
                policy=projection.poison.live,
            )
        # A poison event of a stream that contributes to no key without it (a cart whose only item is
        # poison, in a projection of confirmed carts' items) is in no computation above: the new
        # events are checked on their own too, so each one is projected or dead-lettered, as in a rebuild.
        with filtered_view(con, "new_events", source, in_range(after, until)) as new_events:
            stray = poison_besides(
                con,
                projection,
                new_events,
                result.poison if result else (),
                upcasters=registry.upcasters,
                policy=projection.poison.live,
            )
            poison = [*(result.poison if result else ()), *stray]
            counted = con.execute(f"SELECT count(*) FROM {new_events}").fetchone()
            n_events = int(counted[0]) if counted else 0
    at = datetime.now(UTC)

    existing = _rows_to_replace(con, projection, info, keys, cycle)
    # Every name qualified: the commit runs with whichever default database the caller has (project
    # keeps ``memory`` for a whole cycle, see computing_in_memory).
    table, versions, letters = f"{LAKE_ALIAS}.{info.table}", f"{LAKE_ALIAS}.meta.projection_versions", DEAD_LETTERS

    def moved() -> bool:
        """Whether another process advanced (or rebuilt, or dropped) the version since ``after``."""
        current = con.execute(
            f"SELECT transaction_id, global_position, state FROM {versions} WHERE name = ? AND version = ?",
            [info.name, info.version],
        ).fetchone()
        return current is None or Checkpoint(int(current[0]), int(current[1])) != after or current[2] == "dropped"

    def commit() -> int | None:
        try:
            with transaction(con) as tx:
                change = 0  # the version's rows after minus before: its row count moves by it
                if result is not None:
                    with _registered(con, existing) as keys_view, _registered(con, result.rows) as rows_view:
                        if existing.num_rows:
                            change -= _delete_keys(con, table, projection, keys_view)
                        inserted = con.execute(f"INSERT INTO {table} SELECT * FROM {rows_view}").fetchone()
                        change += int(inserted[0]) if inserted else 0
                write_dead_letters(con, projection, unrecorded(con, projection, poison, letters), at, letters)
                # The checkpoint moves only from where this advance started, and the row count by the change, in
                # one statement (each costs catalog round trips; a count(*) of the table and a read of the row
                # before it took 36 ms a cycle under follow's load): a version another process moved, rebuilt
                # or dropped meanwhile matches no row, and it all rolls back.
                updated = con.execute(
                    f"UPDATE {versions} SET transaction_id = ?, global_position = ?, rows = rows + ?, "
                    "updated_at = get_current_timestamp() WHERE name = ? AND version = ? AND transaction_id = ? "
                    "AND global_position = ? AND state <> 'dropped'",
                    [
                        until.transaction_id,
                        until.global_position,
                        change,
                        info.name,
                        info.version,
                        after.transaction_id,
                        after.global_position,
                    ],
                ).fetchone()
                if not updated or not updated[0]:
                    tx.abandon()
                    return None  # its commit stands
                return info.rows + change
        except duckdb.CatalogException:
            if moved():  # dropped meanwhile, its table with it: nothing to write
                return None
            raise

    rows = retry_conflicts(commit, f"updating {info.table}")
    if cache is not None:
        if rows is None or touched.contributions is None:
            cache.drop(info)
        else:
            cache.put(info, until, forgotten, touched.contributions)
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
