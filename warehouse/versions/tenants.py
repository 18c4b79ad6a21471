"""Per-tenant projections: one tenant's rows rebuilt, compared and promoted without touching the others'.

A per-tenant projection (``Projection(per_tenant=True)``) keys its rows by ``tenant_id`` first, so
a tenant's rows are a slice of every version table. Three operations work on one slice:

- :func:`rebuild_tenant` recomputes the tenant's rows of a built version from the tenant's events, up
  to the version's own checkpoint (so the table stays at one checkpoint), and replaces them in one
  commit: a DELETE and an INSERT of that tenant's rows, nothing else.
- ``compare_versions(..., tenant=T)`` (:mod:`warehouse.diff.projection_versions`) compares the slices.
- :func:`promote_tenant` pins the tenant to another version: ``analytics.<name>`` becomes the live
  version's rows of the other tenants plus each pinned tenant's rows of its version, rewritten with
  ``meta.tenant_promotions`` in one commit. :func:`rollback_tenant` undoes a tenant's last pin.

A whole promotion or rollback (``promote NAME N``) moves every tenant: pins recorded before it no
longer count (:func:`tenant_versions` reads only newer ones), and its view reads one table again.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.quoting import quote_literal
from projections import TENANT_ID, PoisonEvent, Projection, Registry, compute_into
from projections.engine import Check, escalate
from projections.registry import did_you_mean
from warehouse.errors import PromotionError
from warehouse.lake import retry_conflicts, set_view_column_comments, transaction
from warehouse.versions.catalog import (
    ProjectResult,
    VersionInfo,
    check_fingerprint,
    ensure_version_tables,
    exists,
    list_versions,
    live_columns,
    live_version,
    validate_target,
    version_table,
)
from warehouse.versions.dead_lettering import write_dead_letters
from warehouse.versions.lake_events import EVENTS, events_until, filtered_view
from warehouse.versions.promotion import Promotion, _actor, latest_comparison

__all__ = [
    "check_tenant",
    "per_tenant_projection",
    "promote_tenant",
    "rebuild_tenant",
    "rollback_tenant",
    "tenant_relation",
    "tenant_versions",
]

_TENANT_PROMOTIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.tenant_promotions (name VARCHAR, tenant_id VARCHAR, from_version INTEGER, "
    "to_version INTEGER, promoted_at TIMESTAMPTZ, actor VARCHAR, comparison_id VARCHAR)"
)
_TENANT_PROMOTIONS_COMMENT = (
    "Every promotion and rollback of one tenant of a per-tenant projection: the version its rows in "
    "analytics.<name> come from (until a whole promotion or rollback of the projection moves every tenant)."
)


def per_tenant_projection(registry: Registry, name: str, version: int | None = None) -> Projection:
    """The registered projection, which must be per tenant (a ConfigurationError saying how otherwise)."""
    projection = validate_target(registry, name, version)
    if not projection.per_tenant:
        raise ConfigurationError(
            f"{projection.label} is not per tenant, so --tenant cannot pick its rows: declare it with "
            f'Projection(..., per_tenant=True) and {TENANT_ID} first in its key (docs/versions.md, "Tenants"), '
            "or leave out --tenant to work on every row. Nothing was written."
        )
    return projection


def check_tenant(con: duckdb.DuckDBPyConnection, tenant: str) -> None:
    """Refuse a tenant with no event in the lake (a typo must not build, compare or pin an empty slice)."""
    if con.execute(f"SELECT 1 FROM {EVENTS} WHERE {TENANT_ID} = ? LIMIT 1", [tenant]).fetchone():
        return
    rows = con.execute(f"SELECT DISTINCT {TENANT_ID} FROM {EVENTS} WHERE {TENANT_ID} IS NOT NULL").fetchall()
    known = sorted(str(r[0]) for r in rows)
    listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
    where = f"the lake's tenants are {listed}" if known else "no event in the lake has a tenant_id"
    raise ConfigurationError(
        f"tenant {tenant!r} has no events in the lake{did_you_mean(tenant, known)}: {where} "
        "(raw.all_events.tenant_id; see PROJECTIONIST_TENANT_FIELD in docs/stores.md). Nothing was written."
    )


def tenant_relation(name: str, version: int, tenant: str) -> str:
    """SQL: the rows of version ``version`` of ``name`` that belong to ``tenant`` (what a tenant's diff compares)."""
    return f"SELECT * FROM lake.{version_table(name, version)} WHERE {TENANT_ID} = {quote_literal(tenant)}"


def _versions(con: duckdb.DuckDBPyConnection, name: str) -> dict[int, VersionInfo]:
    """The versions of ``name`` recorded in the lake (their tables created first if missing), by number."""
    ensure_version_tables(con)
    return {v.version: v for v in list_versions(con, name)}


def _built(projection: Projection, versions: dict[int, VersionInfo], states: tuple[str, ...]) -> VersionInfo:
    info = versions.get(projection.version)
    if info is None or info.state not in states:
        state = "not built" if info is None else info.state
        raise PromotionError(
            f"{projection.name} v{projection.version} is {state}: a tenant's rows go into a version built for "
            f"every tenant; run `projectionist rebuild {projection.name} --version {projection.version}` first. "
            "Nothing was written."
        )
    check_fingerprint(projection, info)
    return info


def rebuild_tenant(
    con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int, tenant: str
) -> ProjectResult:
    """Recompute ``tenant``'s rows of a built version and swap them in with one commit; other rows stay as they are.

    The tenant's events are read up to the version's checkpoint, so the table stays at one checkpoint
    (the next ``project`` advances it for every tenant). The rows are computed before the commit, into a
    temporary table: a body that returns a row of another tenant is refused there, with nothing written.
    The tenant's dead letters of this version are replaced by this computation's.
    """
    started = time.monotonic()
    projection = per_tenant_projection(registry, name, version)
    versions = _versions(con, name)
    check_tenant(con, tenant)
    info = _built(projection, versions, ("ready", "live", "retired"))
    target = version_table(name, version)
    scratch = f"_tenant_rows_{uuid.uuid4().hex[:12]}"
    columns = ", ".join(f"{c.name} {c.type}" for c in projection.output_columns)
    with (
        events_until(con, info.checkpoint) as upto,
        filtered_view(con, "tenant", upto, f"{TENANT_ID} = {quote_literal(tenant)}") as events,
    ):
        count_row = con.execute(f"SELECT count(*) FROM {events}").fetchone()
        events_read = int(count_row[0]) if count_row else 0

        def compute(check: Check) -> tuple[int, list[PoisonEvent]]:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {scratch} ({columns})")
            inserted = compute_into(
                con, projection, events, f"temp.{scratch}", upcasters=registry.upcasters, check=check
            )
            return inserted.rows, list(inserted.poison)

        try:
            rows, poison = escalate(compute)
            strays = con.execute(
                f"SELECT count(*) FROM temp.{scratch} WHERE {TENANT_ID} IS DISTINCT FROM ?", [tenant]
            ).fetchone()
            if strays and strays[0]:
                raise ConfigurationError(
                    f"{projection.label} returned {strays[0]} row(s) of another tenant from {tenant!r}'s events: its "
                    f"body must take {TENANT_ID} from events.{TENANT_ID}. Nothing was written."
                )
            at = datetime.now(UTC)

            def commit() -> None:
                with transaction(con):
                    con.execute(f"DELETE FROM {target} WHERE {TENANT_ID} = ?", [tenant])
                    con.execute(f"INSERT INTO {target} SELECT * FROM temp.{scratch}")
                    con.execute(
                        "DELETE FROM meta.dead_letters WHERE projection = ? AND version = ? AND event_id IN "
                        f"(SELECT event_id FROM {EVENTS} WHERE {TENANT_ID} = ?)",
                        [name, version, tenant],
                    )
                    write_dead_letters(con, projection, poison, at)
                    # built_at moves too: a comparison made before these rows changed no longer opens a gate.
                    con.execute(
                        f"UPDATE meta.projection_versions SET rows = (SELECT count(*) FROM {target}), built_at = ?, "
                        "updated_at = get_current_timestamp() WHERE name = ? AND version = ?",
                        [at, name, version],
                    )

            retry_conflicts(commit, f"replacing tenant {tenant!r}'s rows of {target}")
        finally:
            con.execute(f"DROP TABLE IF EXISTS temp.{scratch}")
    seconds = time.monotonic() - started
    return ProjectResult(name, version, events_read, rows, rows, info.checkpoint, len(poison), seconds)


def _ensure_tenant_promotions(con: duckdb.DuckDBPyConnection) -> None:
    if exists(con, "meta", "tenant_promotions"):
        return

    def create() -> None:
        with transaction(con):
            con.execute(_TENANT_PROMOTIONS_DDL)
            con.execute(f"COMMENT ON TABLE meta.tenant_promotions IS {quote_literal(_TENANT_PROMOTIONS_COMMENT)}")

    retry_conflicts(create, "creating meta.tenant_promotions")


def _pins(con: duckdb.DuckDBPyConnection, name: str) -> list[tuple[str, int, int | None]]:
    """Each tenant's latest promotion newer than the projection's last whole one: (tenant, to, from)."""
    if not exists(con, "meta", "tenant_promotions"):
        return []
    rows = con.execute(
        "SELECT tenant_id, arg_max(to_version, promoted_at), arg_max(from_version, promoted_at) "
        "FROM meta.tenant_promotions WHERE name = $1 AND promoted_at > "
        "(SELECT coalesce(max(promoted_at), '-infinity'::TIMESTAMPTZ) FROM meta.promotions WHERE name = $1) "
        "GROUP BY tenant_id ORDER BY tenant_id",
        [name],
    ).fetchall()
    return [(str(t), int(to), None if f is None else int(f)) for t, to, f in rows]


def tenant_versions(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, int]:
    """Tenant → the version its rows in ``analytics.<name>`` come from, for the tenants not on the live version."""
    pins = _pins(con, name)
    live = live_version(con, name) if pins else None
    return {tenant: to for tenant, to, _ in pins if live is None or to != live.version}


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".")
    rows = con.execute(
        "SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = 'lake' AND schema_name = ? "
        "AND table_name = ? ORDER BY column_index",
        [schema, name],
    ).fetchall()
    return [(str(c), str(t)) for c, t in rows]


def _view_sql(con: duckdb.DuckDBPyConnection, live_table: str, pinned: dict[str, int], name: str) -> str:
    """The live table's rows of unpinned tenants, plus each pinned tenant's rows of its version: the public
    columns only, as every live view (a column carrying a private field stays in the version's table)."""
    columns = ", ".join(f'"{column}"' for column, _ in live_columns(con, live_table))
    if not pinned:
        return f"SELECT {columns} FROM {live_table}"
    listed = ", ".join(quote_literal(t) for t in sorted(pinned))
    parts = [f"SELECT {columns} FROM {live_table} WHERE {TENANT_ID} IS NULL OR {TENANT_ID} NOT IN ({listed})"]
    for version in sorted(set(pinned.values())):
        mine = ", ".join(quote_literal(t) for t, v in sorted(pinned.items()) if v == version)
        parts.append(f"SELECT {columns} FROM {version_table(name, version)} WHERE {TENANT_ID} IN ({mine})")
    return " UNION ALL ".join(parts)


def _current(
    con: duckdb.DuckDBPyConnection, name: str, tenant: str, versions: dict[int, VersionInfo]
) -> tuple[VersionInfo, int]:
    """The live version, and the version ``tenant``'s rows are served from."""
    live = next((v for v in versions.values() if v.state == "live"), None)
    if live is None:
        raise PromotionError(
            f"{name} has no live version: promote one for every tenant first (`projectionist promote {name} N`)."
        )
    pinned = {t: to for t, to, _ in _pins(con, name) if to != live.version}
    return live, pinned.get(tenant, live.version)


def _pin(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    live: VersionInfo,
    tenant: str,
    from_version: int,
    to_version: int,
    actor: str,
    comparison_id: str | None,
) -> Promotion:
    """Rewrite ``analytics.<name>`` with ``tenant`` on ``to_version`` and record it, in one commit.

    The other tenants' pins are read in the same transaction: two tenants promoted at once either both
    land in the view, or the later commit conflicts and is retried on the pins the first one wrote.
    """
    name = projection.name
    if to_version != live.version and _columns(con, version_table(name, to_version)) != _columns(con, live.table):
        raise PromotionError(
            f"{name} v{to_version} has other columns than the live v{live.version}: one view cannot serve both, "
            f"so its tenants cannot be promoted one by one; promote v{to_version} for every tenant "
            f"(`projectionist promote {name} {to_version}`). Nothing was changed."
        )
    _ensure_tenant_promotions(con)
    at = datetime.now(UTC)
    comment = con.execute(
        "SELECT comment FROM duckdb_views() WHERE database_name = 'lake' AND schema_name = 'analytics' "
        "AND view_name = ?",
        [name],
    ).fetchone()
    described = con.execute(
        "SELECT column_name, comment FROM meta.column_comments WHERE schema_name = 'analytics' AND view_name = ?",
        [name],
    ).fetchall()

    def commit() -> None:
        with transaction(con):
            pinned = {t: v for t, v, _ in _pins(con, name) if t != tenant and v != live.version}
            if to_version != live.version:
                pinned[tenant] = to_version
            con.execute(f"CREATE OR REPLACE VIEW analytics.{name} AS {_view_sql(con, live.table, pinned, name)}")
            if comment and comment[0]:
                con.execute(f"COMMENT ON VIEW analytics.{name} IS {quote_literal(str(comment[0]))}")
            set_view_column_comments(con, "analytics", name, [(str(c), str(d or "")) for c, d in described])
            con.execute(
                "INSERT INTO meta.tenant_promotions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [name, tenant, from_version, to_version, at, actor, comparison_id],
            )

    retry_conflicts(commit, f"promoting tenant {tenant!r} of {name} to v{to_version}")
    return Promotion(name, from_version, to_version, at, actor, comparison_id)


def promote_tenant(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    version: int,
    tenant: str,
    *,
    force: bool = False,
    actor: str | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Serve ``tenant``'s rows of ``analytics.<name>`` from ``version``; every other tenant's rows stay where they are.

    ``version`` must be ready (kept current by ``project``) or the live one (the tenant follows it again).
    Unless ``force``, a comparison of the tenant's rows (``diff NAME A B --tenant T``) of its current version
    against ``version``, made after both were built, is required.
    """
    projection = per_tenant_projection(registry, name, version)
    versions = _versions(con, name)
    check_tenant(con, tenant)
    live, current = _current(con, name, tenant, versions)
    info = _built(projection, versions, ("ready", "live"))
    if current == version:
        raise PromotionError(f"tenant {tenant!r} of {name} is already on v{version}.")
    before = versions.get(current)
    newest = max((t for t in (before.built_at if before else None, info.built_at) if t is not None), default=None)
    comparison_id = latest_comparison(
        con, tenant_relation(name, current, tenant), tenant_relation(name, version, tenant), newest
    )
    if comparison_id is None and not force:
        raise PromotionError(
            f"tenant {tenant!r} of {name} has no comparison of v{current} against v{version} newer than both "
            f"builds: run `projectionist diff {name} {current} {version} --tenant {tenant}` and check it, then "
            "promote again (or pass --force). Nothing was changed."
        )
    who = _actor(actor)
    if dry_run:
        return Promotion(name, current, version, datetime.now(UTC), who, comparison_id)
    return _pin(con, projection, live, tenant, current, version, who, comparison_id)


def rollback_tenant(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    tenant: str,
    *,
    actor: str | None = None,
    dry_run: bool = False,
) -> Promotion:
    """Serve ``tenant``'s rows from the version its last tenant promotion replaced (the others stay as they are)."""
    projection = per_tenant_projection(registry, name)
    versions = _versions(con, name)
    check_tenant(con, tenant)
    live, current = _current(con, name, tenant, versions)
    last = next((p for p in _pins(con, name) if p[0] == tenant), None)
    if last is None or last[2] is None:
        raise PromotionError(
            f"tenant {tenant!r} of {name} follows the live v{live.version} since its last promotion: there is no "
            f"tenant promotion to roll back (`projectionist rollback {name}` rolls back every tenant)."
        )
    target = last[2]
    info = versions.get(target)
    if info is None or info.state not in ("ready", "live"):
        state = "gone" if info is None else info.state
        raise PromotionError(f"{name} v{target} is {state}: tenant {tenant!r} can no longer be rolled back to it.")
    who = _actor(actor)
    if dry_run:
        return Promotion(name, current, target, datetime.now(UTC), who, None)
    return _pin(con, projection, live, tenant, current, target, who, None)
