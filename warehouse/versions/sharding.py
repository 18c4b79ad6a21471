"""A rebuild split into shards that independent processes (Dagster run workers, machines) compute at once.

:func:`plan_shards` splits the streams up to the lake's checkpoint into K ranges of stream ids of
about as many events (the chunks of a one-process rebuild, computed side by side instead of one
after the other) and records the plan in ``meta.rebuild_shard_plans``. :func:`build_shard`
computes one shard into a table of its own, ``projections._shard_<name>_v<N>_<i>``, and records it
in ``meta.rebuild_shard_results``, in one commit; any process can build any shard, in any order, at
the same time as the others (only inserts and tables of its own: no two shards conflict). A shard
that failed is built again alone; one built twice keeps its first result. :func:`finish_shards`
checks that every shard is there and, in one commit, gathers them into the version's staging table
and swaps it in as a one-process rebuild's last commit does: readers see the old table or the new
one. The result is the same table (a key's rows depend only on its own streams: only projections
keyed by stream can be sharded).
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.positions import START, Checkpoint
from projections import Registry, compute_into
from projections.engine import Check, escalate
from warehouse.errors import LakeUnavailableError
from warehouse.ingest import INGEST_CONSUMER
from warehouse.lake import retry_conflicts, transaction
from warehouse.versions.catalog import (
    ProjectResult,
    ensure_version_tables,
    find_version,
    upsert_version,
    validate_target,
)
from warehouse.versions.dead_lettering import write_dead_letters
from warehouse.versions.lake_events import events_until, filtered_view
from warehouse.versions.rebuild_plan import plan_fingerprint, staging_table, stream_boundaries, stream_range
from warehouse.versions.rebuilding import swap_in, table_ddl

__all__ = ["ShardPlan", "build_shard", "finish_shards", "plan_shards", "shard_table"]

_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.rebuild_shard_plans (name VARCHAR, version INTEGER, run_id VARCHAR, "
    "fingerprint VARCHAR, plan VARCHAR, transaction_id UBIGINT, global_position BIGINT, events BIGINT, "
    "shards INTEGER, boundaries VARCHAR, started_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS meta.rebuild_shard_results (name VARCHAR, version INTEGER, run_id VARCHAR, "
    "shard INTEGER, rows BIGINT, dead_letters BIGINT, seconds DOUBLE, committed_at TIMESTAMPTZ)",
)


@dataclass(frozen=True)
class ShardPlan:
    """A sharded rebuild of one version: the checkpoint it builds up to and its ranges of stream ids."""

    name: str
    version: int
    run_id: str
    until: Checkpoint
    events: int
    boundaries: tuple[str, ...]  # shard i: boundaries[i - 1] <= stream_id < boundaries[i]
    shards: int
    done: tuple[int, ...]  # shards already built (a rerun builds only the others)


def shard_table(name: str, version: int, shard: int) -> str:
    """The table shard ``shard`` of a sharded rebuild of ``name`` v``version`` is built into."""
    return f"projections._shard_{name}_v{version}_{shard}"


def _ensure(con: duckdb.DuckDBPyConnection) -> None:
    ensure_version_tables(con)
    with transaction(con):
        for statement in _DDL:
            con.execute(statement)


def _read(con: duckdb.DuckDBPyConnection, name: str, version: int) -> ShardPlan | None:
    row = con.execute(
        "SELECT run_id, transaction_id, global_position, events, shards, boundaries FROM meta.rebuild_shard_plans "
        "WHERE name = ? AND version = ?",
        [name, version],
    ).fetchone()
    if row is None:
        return None
    done = con.execute(
        "SELECT DISTINCT shard FROM meta.rebuild_shard_results WHERE name = ? AND version = ? AND run_id = ? "
        "ORDER BY shard",
        [name, version, row[0]],
    ).fetchall()
    boundaries = tuple(json.loads(row[5]))
    return ShardPlan(
        name, version, str(row[0]), Checkpoint(int(row[1]), int(row[2])), int(row[3]), boundaries, int(row[4]),
        tuple(int(d[0]) for d in done),
    )  # fmt: skip


def plan_shards(con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int, shards: int) -> ShardPlan:
    """The plan of a sharded rebuild of ``name`` v``version`` in ``shards`` shards: the recorded one when it
    builds the same thing (a rerun continues it), else a new one up to the lake's ingest checkpoint."""
    projection = validate_target(registry, name, version)
    if shards < 1:
        raise ConfigurationError(f"--shards must be 1 or more, not {shards}.")
    if not projection.keyed_by_stream:
        raise ConfigurationError(
            f"{projection.label} gathers several streams into one key (stream_keys), so its keys cannot be split "
            f"by stream: rebuild it in one process (`projectionist rebuild {name} --version {version}`)."
        )
    _ensure(con)

    def make() -> ShardPlan:
        with transaction(con) as tx:
            found = con.execute(
                "SELECT fingerprint, plan, shards FROM meta.rebuild_shard_plans WHERE name = ? AND version = ?",
                [name, version],
            ).fetchone()
            if found == (projection.fingerprint, plan_fingerprint(registry), shards):
                tx.abandon()
                plan = _read(con, name, version)
                assert plan is not None
                return plan
            checkpoint = con.execute(
                "SELECT transaction_id, global_position, events FROM meta.checkpoints WHERE consumer = ?",
                [INGEST_CONSUMER],
            ).fetchone()
            until, events = (
                (Checkpoint(int(checkpoint[0]), int(checkpoint[1])), int(checkpoint[2])) if checkpoint else (START, 0)
            )
            boundaries = stream_boundaries(con, until, shards) if shards > 1 else ()
            run_id = uuid.uuid4().hex
            if found is not None:  # a plan of other code, upcasters or shard count: start over
                _forget(con, name, version)
            con.execute(
                "INSERT INTO meta.rebuild_shard_plans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, get_current_timestamp())",
                [name, version, run_id, projection.fingerprint, plan_fingerprint(registry), until.transaction_id,
                 until.global_position, events, len(boundaries) + 1, json.dumps(boundaries)],
            )  # fmt: skip
            if find_version(con, name, version) is None:
                upsert_version(con, projection, "building", START, 0, None, None)
            return ShardPlan(name, version, run_id, until, events, boundaries, len(boundaries) + 1, ())

    return retry_conflicts(make, f"planning the shards of {projection.label}")


def _forget(con: duckdb.DuckDBPyConnection, name: str, version: int) -> None:
    """Inside a transaction: drop a sharded rebuild's plan, results, shard tables and staged dead letters."""
    shards = con.execute(
        "SELECT shards FROM meta.rebuild_shard_plans WHERE name = ? AND version = ?", [name, version]
    ).fetchone()
    for shard in range(int(shards[0]) if shards else 0):
        con.execute(f"DROP TABLE IF EXISTS {shard_table(name, version, shard)}")
    con.execute("DELETE FROM meta.rebuild_shard_plans WHERE name = ? AND version = ?", [name, version])
    con.execute("DELETE FROM meta.rebuild_shard_results WHERE name = ? AND version = ?", [name, version])
    con.execute("DELETE FROM meta.rebuild_dead_letters WHERE projection = ? AND version = ?", [name, version])


def build_shard(
    con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int, shard: int
) -> tuple[int, int]:
    """Build shard ``shard`` of the recorded plan of ``name`` v``version`` and commit it; its rows and dead
    letters. A shard already built is left as it is (its recorded counts are returned)."""
    projection = validate_target(registry, name, version)
    _ensure(con)
    plan = _read(con, name, version)
    if plan is None:
        raise ConfigurationError(
            f"no sharded rebuild of {projection.label} is planned: run `projectionist rebuild {name} --version "
            f"{version} --shards K`."
        )
    if not 0 <= shard < plan.shards:
        raise ConfigurationError(f"shard {shard} does not exist: the plan has shards 0 to {plan.shards - 1}.")
    table = shard_table(name, version, shard)
    started = time.monotonic()

    def commit(events: str, check: Check) -> tuple[int, int]:
        with transaction(con) as tx:
            recorded = con.execute(
                "SELECT (SELECT any_value(run_id) FROM meta.rebuild_shard_plans WHERE name = $1 AND version = $2), "
                "(SELECT any_value([rows, dead_letters]) FROM meta.rebuild_shard_results "
                "WHERE name = $1 AND version = $2 AND run_id = $3 AND shard = $4)",
                [name, version, plan.run_id, shard],
            ).fetchone()
            assert recorded is not None
            if recorded[0] != plan.run_id:
                raise LakeUnavailableError(
                    f"the sharded rebuild of {projection.label} was planned again meanwhile: rerun "
                    f"`projectionist rebuild {name} --version {version} --shards K`."
                )
            if recorded[1] is not None:  # built by another process meanwhile: its result stands
                tx.abandon()
                return int(recorded[1][0]), int(recorded[1][1])
            for statement in table_ddl(projection, table):
                con.execute(statement)
            upcasters, policy = registry.upcasters, projection.poison.rebuild
            inserted = compute_into(con, projection, events, table, upcasters=upcasters, policy=policy, check=check)
            at = datetime.now(UTC)
            write_dead_letters(con, projection, inserted.poison, at, "meta.rebuild_dead_letters")
            con.execute(
                "INSERT INTO meta.rebuild_shard_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    name,
                    version,
                    plan.run_id,
                    shard,
                    inserted.rows,
                    len(inserted.poison),
                    time.monotonic() - started,
                    at,
                ],
            )
            return inserted.rows, len(inserted.poison)

    with events_until(con, plan.until) as events:
        where = stream_range(plan.boundaries, shard) if plan.shards > 1 else "true"
        with filtered_view(con, "shard", events, where) as view:
            what = f"building shard {shard + 1} of {plan.shards} of {projection.label}"
            return escalate(lambda check: retry_conflicts(functools.partial(commit, view, check), what))


def finish_shards(con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int) -> ProjectResult:
    """When every shard is built: gather them and swap the version in, in one commit (as a rebuild's last)."""
    projection = validate_target(registry, name, version)
    _ensure(con)
    started = time.monotonic()

    def swap() -> ProjectResult:
        with transaction(con):
            plan = _read(con, name, version)
            if plan is None:
                raise ConfigurationError(f"no sharded rebuild of {projection.label} is planned.")
            missing = sorted(set(range(plan.shards)) - set(plan.done))
            if missing:
                which = f"shard {missing[0]} is" if len(missing) == 1 else f"shards {', '.join(map(str, missing))} are"
                raise ConfigurationError(
                    f"{which} not built yet ({len(plan.done)} of {plan.shards} of {name} v{version} are): build "
                    f"{'it' if len(missing) == 1 else 'them'}, or rerun `projectionist rebuild {name} --version "
                    f"{version} --shards {plan.shards}` (built shards are kept)."
                )
            totals: Any = con.execute(
                "SELECT sum(rows), sum(dead_letters), max(seconds) FROM (SELECT DISTINCT ON (shard) * FROM "
                "meta.rebuild_shard_results WHERE name = ? AND version = ? AND run_id = ?)",
                [name, version, plan.run_id],
            ).fetchone()
            rows, dead, seconds = int(totals[0] or 0), int(totals[1] or 0), float(totals[2] or 0.0)
            staging = staging_table(name, version)
            for statement in table_ddl(projection, staging):
                con.execute(statement)
            columns = ", ".join(c.name for c in projection.output_columns)
            for shard in range(plan.shards):
                con.execute(f"INSERT INTO {staging} SELECT {columns} FROM {shard_table(name, version, shard)}")
            state = con.execute(
                "SELECT (SELECT any_value(state) FROM meta.projection_versions WHERE name = $1 AND version = $2), "
                "(SELECT count(*) FROM meta.dead_letters WHERE projection = $1 AND version = $2)",
                [name, version],
            ).fetchone()
            assert state is not None
            at = datetime.now(UTC)
            con.execute("DELETE FROM meta.rebuilds WHERE name = ? AND version = ?", [name, version])
            swap_in(
                con, projection, [], plan.until, rows, at, seconds, state[0] == "live", False, dead > 0, bool(state[1])
            )
            for shard in range(plan.shards):
                con.execute(f"DROP TABLE IF EXISTS {shard_table(name, version, shard)}")
            con.execute("DELETE FROM meta.rebuild_shard_plans WHERE name = ? AND version = ?", [name, version])
            con.execute("DELETE FROM meta.rebuild_shard_results WHERE name = ? AND version = ?", [name, version])
            return ProjectResult(
                name, version, plan.events, rows, rows, plan.until, dead, time.monotonic() - started, plan.shards, 0
            )

    return retry_conflicts(swap, f"swapping in the shards of {projection.label}")
