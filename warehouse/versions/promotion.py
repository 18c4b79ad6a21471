"""Promotion: which version is live behind ``analytics.<name>``, swapped atomically; rollback and retention.

A promotion swaps the view, the states and ``meta.promotions`` in one DuckLake transaction.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.quoting import quote_literal
from projections import Projection, Registry
from warehouse.errors import PromotionError
from warehouse.ingest import lake_checkpoint
from warehouse.lake import retry_conflicts, set_view_column_comments, transaction
from warehouse.versions.catalog import (
    check_fingerprint,
    ensure_version_tables,
    exists,
    find_version,
    list_versions,
    live_columns,
    live_version,
    live_view_sql,
    validate_target,
    version_table,
)
from warehouse.versions.incremental import advance_to

__all__ = ["Promotion", "latest_comparison", "promote", "retain", "rollback", "rollback_target"]


@dataclass(frozen=True)
class Promotion:
    """One promotion (or rollback) of a projection's live version."""

    name: str
    from_version: int | None
    to_version: int
    at: datetime
    actor: str
    comparison_id: str | None


def _actor(actor: str | None) -> str:
    if actor:
        return actor
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
    if not exists(con, "meta", "comparisons"):
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
            con.execute(live_view_sql(con, name, version_table(name, version)))
            con.execute(
                f"COMMENT ON VIEW analytics.{name} IS "
                f"{quote_literal(f'{projection.description} (live: {version_table(name, version)})')}"
            )
            set_view_column_comments(
                con, "analytics", name, [(c.name, c.description) for c in projection.output_columns if c.public]
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
    dry_run: bool = False,
) -> Promotion:
    """Make ``version`` live: ``analytics.<name>`` swaps to it atomically; the previous live one is retired.

    Unless ``force``, a comparison of the live version against this one, recorded after both were
    built (``projectionist diff``), is required; a projection's first promotion needs none. With
    ``dry_run`` every check runs and nothing is written: the promotion it would record is returned.
    """
    projection = validate_target(registry, name, version)
    ensure_version_tables(con)
    info = find_version(con, name, version)
    if info is None or info.state in ("building", "dropped"):
        state = "not built" if info is None else info.state
        raise PromotionError(
            f"{name} v{version} is {state}, not ready: run `projectionist rebuild {name} --version {version}` first."
        )
    check_fingerprint(projection, info)
    live = live_version(con, name)
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
    if dry_run:
        return Promotion(name, live.version if live else None, version, datetime.now(UTC), _actor(actor), comparison_id)
    return _swap(con, projection, live.version if live else None, _actor(actor), comparison_id)


def rollback_target(con: duckdb.DuckDBPyConnection, name: str) -> int | None:
    """The version ``rollback`` would make live again (the one the live version replaced), or None."""
    ensure_version_tables(con)
    live = live_version(con, name)
    return None if live is None else _replaced(con, name, live.version)


def _replaced(con: duckdb.DuckDBPyConnection, name: str, live: int) -> int | None:
    """The version the promotion to ``live`` replaced (None for a projection's first live version)."""
    row = con.execute(
        "SELECT from_version FROM meta.promotions WHERE name = ? AND to_version = ? ORDER BY promoted_at DESC LIMIT 1",
        [name, live],
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def rollback(
    con: duckdb.DuckDBPyConnection,
    name: str,
    *,
    actor: str | None = None,
    registry: Registry | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Make the previous live version of ``name`` live again (its table must still exist).

    A retired version is no longer kept current; with ``registry`` it is first brought up to the
    lake's checkpoint, so the rollback serves current rows (without, the next ``project`` does it).
    With ``dry_run`` the checks run and nothing is written or advanced.
    """
    ensure_version_tables(con)
    live = live_version(con, name)
    if live is None:
        raise PromotionError(f"{name} has no live version to roll back.")
    target = _replaced(con, name, live.version)
    if target is None:
        raise PromotionError(f"{name} v{live.version} was its first live version: there is nothing to roll back to.")
    previous = find_version(con, name, target)
    if previous is None or previous.state not in ("retired", "ready"):
        state = "gone" if previous is None else previous.state
        raise PromotionError(f"{name} v{target} is {state}: it can no longer be rolled back to.")
    if dry_run:
        return Promotion(name, live.version, previous.version, datetime.now(UTC), _actor(actor), None)
    if registry is not None and previous.version in registry.versions(name):
        projection = registry.get(name, previous.version)
        check_fingerprint(projection, previous)
        until, _ = lake_checkpoint(con)
        if until > previous.checkpoint:
            advance_to(con, registry, projection, previous, until)
    # Rolling back restores what was live before; its comments come from the table itself.
    description_row = con.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'projections' "
        "AND table_name = ?",
        [f"{name}_v{previous.version}"],
    ).fetchone()
    columns = live_columns(con, previous.table)
    at = datetime.now(UTC)
    who = _actor(actor)

    def commit() -> None:
        with transaction(con):
            con.execute(live_view_sql(con, name, previous.table))
            comment = str(description_row[0]) if description_row and description_row[0] else previous.table
            con.execute(f"COMMENT ON VIEW analytics.{name} IS {quote_literal(comment)}")
            set_view_column_comments(con, "analytics", name, columns)
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


def retain(
    con: duckdb.DuckDBPyConnection, name: str, keep: int, *, dry_run: bool = False, drop_rollback_target: bool = True
) -> list[int]:
    """Drop the tables of ``name``'s retired versions beyond the newest ``keep``; return their versions.

    With ``dry_run`` nothing is dropped (the versions that would be are returned). Without
    ``drop_rollback_target``, a drop that would take the version ``rollback`` restores is refused
    (:class:`PromotionError`) before anything is dropped.
    """
    if keep < 0:
        raise ConfigurationError(f"--keep must be 0 or more, not {keep}.")
    retired = sorted((v.version for v in list_versions(con, name) if v.state == "retired"), reverse=True)
    doomed = retired[keep:]
    if not doomed or dry_run:
        return doomed
    target = rollback_target(con, name)
    if not drop_rollback_target and target in doomed:
        raise PromotionError(
            f"keeping {keep} retired version(s) of {name} would drop v{target}, the version "
            f"`projectionist rollback {name}` restores: keep more, or confirm with --yes. Nothing was dropped."
        )

    def commit() -> None:
        with transaction(con):
            for version in doomed:
                con.execute(f"DROP TABLE IF EXISTS {version_table(name, version)}")
                con.execute(
                    "UPDATE meta.projection_versions SET state = 'dropped', updated_at = get_current_timestamp() "
                    "WHERE name = ? AND version = ?",
                    [name, version],
                )

    retry_conflicts(commit, f"dropping retired versions of {name}")
    return doomed
