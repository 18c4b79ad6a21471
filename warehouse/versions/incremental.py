"""The incremental step of one version: recompute the keys its new events touch, and move its checkpoint."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import duckdb

from eventstore.positions import Checkpoint
from projections import Projection, Registry, compute, touched_keys
from projections.engine import poison_besides
from warehouse.lake import retry_conflicts, transaction
from warehouse.versions.catalog import ProjectResult, VersionInfo
from warehouse.versions.dead_lettering import unrecorded, write_dead_letters
from warehouse.versions.lake_events import count_events, events_until

__all__ = ["advance_to"]


def _delete_keys(con: duckdb.DuckDBPyConnection, table: str, projection: Projection, keys_view: str) -> None:
    """Delete the rows of ``table`` whose key is in the relation ``keys_view``."""
    match = " AND ".join(f"t.{k} IS NOT DISTINCT FROM k.{k}" for k in projection.key)
    con.execute(f"DELETE FROM {table} AS t WHERE EXISTS (SELECT 1 FROM {keys_view} AS k WHERE {match})")


def advance_to(
    con: duckdb.DuckDBPyConnection, registry: Registry, projection: Projection, info: VersionInfo, until: Checkpoint
) -> ProjectResult | None:
    """Replace the rows of the keys touched in ``(info.checkpoint, until]`` and move the checkpoint, in one commit.

    None when another process moved the version's checkpoint first (its commit stands).
    """
    started = time.monotonic()
    after = info.checkpoint
    with events_until(con, until) as events:
        keys = touched_keys(con, projection, events, after, until, upcasters=registry.upcasters)
        result = (
            compute(con, projection, events, keys, upcasters=registry.upcasters, policy=projection.poison.live)
            if keys.num_rows
            else None
        )
        # A poison event of a stream that contributes to no key without it (a cart whose only item is
        # poison, in a projection of confirmed carts' items) is in no computation above: the new
        # events are checked on their own too, so each one is projected or dead-lettered, as in a rebuild.
        with events_until(con, until, after) as new_events:
            stray = poison_besides(
                con,
                projection,
                new_events,
                result.poison if result else (),
                upcasters=registry.upcasters,
                policy=projection.poison.live,
            )
        poison = [*(result.poison if result else ()), *stray]
        n_events = count_events(con, after, until)
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
            write_dead_letters(con, projection, unrecorded(con, projection, poison), at)
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
