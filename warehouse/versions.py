"""Versioned projection tables in the lake: rebuild, incremental project, promote, rollback, retention.

Each version of a projection lives in ``projections.<name>_v<N>``; ``meta.projection_versions``
records its state (``building`` → ``ready`` → ``live`` → ``retired``, and ``dropped`` after
retention), the code fingerprint it was built with and its checkpoint in the lake's
``(transaction_id, global_position)`` order. ``analytics.<name>`` is a view over the live version;
promotion swaps it, the state changes and ``meta.promotions`` in one DuckLake transaction.

A version whose code changed without a version bump (fingerprint differs from the recorded one)
is refused by :func:`project` and :func:`promote`; the fix is to bump the version, or to run
:func:`rebuild` of the same version, which replaces its table (explicitly) from the lake.
See docs/versions.md.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from eventstore.errors import ConfigurationError
from eventstore.reader import START, Checkpoint
from projections import Projection, Registry, compute, touched_keys
from projections.engine import PoisonEvent
from warehouse.errors import FingerprintMismatchError, PromotionError
from warehouse.ingest import lake_checkpoint
from warehouse.lake import comment_column, quote_literal, retry_conflicts, set_view_column_comments

__all__ = [
    "DeadLetter",
    "FingerprintMismatchError",
    "ProjectResult",
    "Promotion",
    "PromotionError",
    "VersionInfo",
    "dead_letters",
    "ensure_version_tables",
    "lag",
    "list_versions",
    "project",
    "promote",
    "rebuild",
    "retain",
    "rollback",
    "validate_target",
]

EVENTS = "lake.raw.all_events"
STATES = ("building", "ready", "live", "retired", "dropped")


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
_TABLE_COMMENTS = {
    "meta.projection_versions": "One row per projection version: state, code fingerprint, checkpoint, rows, build.",
    "meta.promotions": "Every promotion and rollback: which version became live, from which, who, when, gated by.",
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
    """Create ``meta.projection_versions`` and ``meta.promotions`` if missing (dead letters come with the lake)."""
    if all(_exists(con, "meta", t.split(".")[1]) for t in _TABLE_COMMENTS):
        return

    def create() -> None:
        with _transaction(con):
            for ddl in (_VERSIONS_DDL, _PROMOTIONS_DDL):
                con.execute(ddl)
            for table, comment in _TABLE_COMMENTS.items():
                con.execute(f"COMMENT ON TABLE {table} IS {quote_literal(comment)}")

    retry_conflicts(create, "creating the projection version tables")


@contextlib.contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


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


def list_versions(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[VersionInfo]:
    """The versions recorded in the lake (of ``name``, or all), by name and version (reads only)."""
    if not _exists(con, "meta", "projection_versions"):
        return []
    rows = con.execute(
        "SELECT name, version, state, fingerprint, transaction_id, global_position, rows, built_at, build_seconds "
        "FROM meta.projection_versions WHERE ? IS NULL OR name = ? ORDER BY name, version",
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
def _events_until(con: duckdb.DuckDBPyConnection, checkpoint: Checkpoint) -> Iterator[str]:
    """A temporary view of the lake's events up to ``checkpoint`` (so a concurrent ingest cannot leak in)."""
    view = f"_events_{uuid.uuid4().hex[:12]}"
    tx, position = int(checkpoint.transaction_id), int(checkpoint.global_position)
    con.execute(
        f"CREATE TEMP VIEW {view} AS SELECT * FROM {EVENTS} WHERE transaction_id < {tx} "
        f"OR (transaction_id = {tx} AND global_position <= {position})"
    )
    try:
        yield view
    finally:
        con.execute(f"DROP VIEW IF EXISTS {view}")


def _write_dead_letters(
    con: duckdb.DuckDBPyConnection, projection: Projection, poison: Sequence[PoisonEvent], at: datetime
) -> None:
    if poison:
        con.executemany(
            "INSERT INTO meta.dead_letters VALUES (?, ?, ?, ?, ?, ?)",
            [[p.event_id, p.global_position, projection.name, projection.version, p.reason, at] for p in poison],
        )


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
        f"(transaction_id > {a_tx} OR (transaction_id = {a_tx} AND global_position > {a_pos})) "
        f"AND (transaction_id < {u_tx} OR (transaction_id = {u_tx} AND global_position <= {u_pos}))"
    )


def _count_events(con: duckdb.DuckDBPyConnection, after: Checkpoint, until: Checkpoint) -> int:
    row = con.execute(f"SELECT count(*) FROM {EVENTS} WHERE {_in_range(after, until)}").fetchone()
    return int(row[0]) if row else 0


def rebuild(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    version: int,
    *,
    progress: Callable[[int], None] | None = None,
) -> ProjectResult:
    """Build ``projections.<name>_v<version>`` from the lake's events (building → ready; a live one stays live).

    The table, its rows and its checkpoint are written in one commit, so a crash mid-rebuild
    leaves the previous state (and a ``building`` mark); rerunning gives the same table.
    Poison events follow the projection's ``poison.rebuild`` policy (default ``stop``).
    """
    projection = validate_target(registry, name, version)
    ensure_version_tables(con)
    started = time.monotonic()
    existing = _version(con, name, version)
    final_state = "live" if existing is not None and existing.state == "live" else "ready"
    if existing is None or existing.state in ("building", "dropped"):

        def mark() -> None:
            with _transaction(con):
                _upsert_version(con, projection, "building", START, 0, None, None)

        retry_conflicts(mark, f"marking {projection.label} as building")
    until, _ = lake_checkpoint(con)
    table = _table(name, version)
    with _events_until(con, until) as events:
        result = compute(con, projection, events, upcasters=registry.upcasters, policy=projection.poison.rebuild)
        n_events = _count_events(con, START, until)
    rows: pa.Table = result.rows
    if progress is not None:
        progress(n_events)
    seconds = time.monotonic() - started
    at = datetime.now(UTC)

    def commit() -> None:
        with _transaction(con):
            for statement in _table_ddl(projection, table):
                con.execute(statement)
            con.register("_rebuild_rows", rows)
            try:
                con.execute(f"INSERT INTO {table} SELECT * FROM _rebuild_rows")
            finally:
                con.unregister("_rebuild_rows")
            con.execute("DELETE FROM meta.dead_letters WHERE projection = ? AND version = ?", [name, version])
            _write_dead_letters(con, projection, result.poison, at)
            _upsert_version(con, projection, final_state, until, rows.num_rows, at, seconds)

    retry_conflicts(commit, f"writing {table}")
    return ProjectResult(
        name, version, n_events, rows.num_rows, rows.num_rows, until, len(result.poison), time.monotonic() - started
    )


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
        n_events = _count_events(con, after, until)
    at = datetime.now(UTC)

    def commit() -> int | None:
        with _transaction(con):
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
                _write_dead_letters(con, projection, result.poison, at)
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
        len(result.poison) if result else 0,
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
    ensure_version_tables(con)
    chosen = list(names) if names is not None else registry.names()
    for name in chosen:
        validate_target(registry, name)
    results: list[ProjectResult] = []
    for name in chosen:
        recorded = list_versions(con, name)
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
            until, _ = lake_checkpoint(con)
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
        with _transaction(con):
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
        with _transaction(con):
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
        with _transaction(con):
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
