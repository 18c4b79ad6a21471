"""Tenants: tenant_id from a native store's metadata or column, and per-tenant rebuild, diff, promotion, rollback."""

from __future__ import annotations

import pytest

from eventstore.adapters import open_reader
from eventstore.connection import connect
from eventstore.duckdb_connections import new_connection
from eventstore.errors import ConfigurationError
from eventstore.positions import START
from eventstore.settings import Settings, parse_tenant_field
from projections import Column, Projection, Registry, Sql, discover
from projections.errors import ProjectionDefinitionError
from tests.warehouse.conftest import append_shop
from warehouse.diff import compare_versions
from warehouse.errors import PromotionError
from warehouse.ingest import ingest, optional_columns, select_raw
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import open_source
from warehouse.versions import promote, rebuild
from warehouse.versions.tenants import promote_tenant, rebuild_tenant, rollback_tenant, tenant_versions

TENANTS = ("acme", "globex", "initech")
# Each cart belongs to one tenant, by a hash of its stream id; the native store keeps it in metadata.
TAG = (
    "UPDATE events SET metadata = metadata || jsonb_build_object('tenant_id', "
    "(ARRAY['acme', 'globex', 'initech'])[1 + abs(hashtext(stream_id)) % 3])"
)


def tenant_store(dsn: str) -> None:
    append_shop(dsn, 300, transactions=2)
    with connect(dsn) as conn:
        conn.execute(TAG)
        conn.execute("ALTER TABLE events ADD COLUMN tenant text")
        conn.execute("UPDATE events SET tenant = metadata ->> 'tenant_id'")


def events_per_tenant(version: int) -> Projection:
    counted = "count(*)" if version == 1 else "count(DISTINCT stream_id)"  # v2 changes what `events` means
    return Projection(
        name="tenant_events",
        version=version,
        description="Events per tenant and event type.",
        key=("tenant_id", "event_type"),
        consumes=("CartOpened", "ItemAdded", "CartConfirmed", "CartCancelled"),
        columns=(
            Column("tenant_id", "VARCHAR", "The tenant."),
            Column("event_type", "VARCHAR", "The event type."),
            Column("events", "BIGINT", "How many."),
        ),
        body=Sql(
            f"SELECT tenant_id, event_type, {counted} AS events, max(global_position) AS last_global_position "
            "FROM events GROUP BY tenant_id, event_type"
        ),
        stream_keys=Sql("SELECT DISTINCT stream_id, tenant_id, event_type FROM events"),
        per_tenant=True,
    )


def tenant_registry() -> Registry:
    bundled = discover(bundled=True, folder=None)
    projections = {(p.name, p.version): p for p in bundled}
    projections.update({("tenant_events", v): events_per_tenant(v) for v in (1, 2)})
    return Registry(projections, bundled.upcasters)


def test_a_tenant_column_of_the_native_table_lands_as_tenant_id(store_dsn: str) -> None:
    tenant_store(store_dsn)
    with open_source(settings_of("native", "column.tenant"), store_dsn) as source:
        con = new_connection("postgres")  # the bundled extension (no download here)
        source.attach(con)
        head = source.head()
        batch = source.batch_sql(START, head.bound, None)
        rows = con.execute(
            f"SELECT tenant_id, count(*) FROM ({select_raw(source, batch, optional_columns(con, source, head.bound))}) "
            "GROUP BY 1 ORDER BY 1"
        ).fetchall()
    with connect(store_dsn) as conn:
        assert rows == conn.execute("SELECT tenant, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    assert [t for t, _ in rows] == list(TENANTS)


def settings_of(kind: str, field: str) -> Settings:
    return Settings.from_env({"PROJECTIONIST_EVENT_STORE_KIND": kind, "PROJECTIONIST_TENANT_FIELD": field})


def test_a_bad_tenant_field_is_refused_naming_the_setting(store_dsn: str) -> None:
    for bad in ("payload.tenant", "metadata.ten ant", "column.Tenant"):
        with pytest.raises(ConfigurationError, match="PROJECTIONIST_TENANT_FIELD"):
            parse_tenant_field(bad)
    with pytest.raises(ConfigurationError, match=r"PROJECTIONIST_TENANT_FIELD=metadata.tenant_id is for stores"):
        open_reader(
            Settings.from_env({"PROJECTIONIST_EVENT_STORE_KIND": "marten", "PROJECTIONIST_TENANT_FIELD": "tenant_id"}),
            store_dsn,
        )
    with pytest.raises(ConfigurationError, match="names a column, but a eventsourcing"):
        open_reader(
            Settings.from_env(
                {"PROJECTIONIST_EVENT_STORE_KIND": "eventsourcing", "PROJECTIONIST_TENANT_FIELD": "column.t"}
            ),
            store_dsn,
        )
    with pytest.raises(ConfigurationError, match=r"names a column public\.events does not have"):
        open_reader(settings_of("native", "column.tenant"), store_dsn)
    with pytest.raises(ProjectionDefinitionError, match="per-tenant projection's key starts with a tenant_id"):
        Projection(**{**events_per_tenant(1).__dict__, "key": ("event_type", "tenant_id"), "source": ""})


def rows_of(con: object, relation: str, tenant: str, *, other: bool = False) -> set[tuple[object, ...]]:
    op = "IS DISTINCT FROM" if other else "="
    return set(con.execute(f"SELECT * FROM {relation} WHERE tenant_id {op} ?", [tenant]).fetchall())  # type: ignore[attr-defined]


def snapshot(con: object) -> int:
    return int(con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()[0])  # type: ignore[attr-defined]


def test_one_tenant_rebuilt_compared_promoted_and_rolled_back_leaves_the_others_byte_identical(
    store_dsn: str, lake_config: LakeConfig
) -> None:
    tenant_store(store_dsn)
    registry = tenant_registry()
    con = open_lake(lake_config)
    with open_source(settings_of("native", "tenant_id"), store_dsn) as source:
        ingest(con, source)
    # The tenant in metadata lands in raw.events.tenant_id: what an analyst filters on returns that tenant's events.
    with connect(store_dsn) as conn:
        per_tenant = conn.execute("SELECT metadata ->> 'tenant_id', count(*) FROM events GROUP BY 1 ORDER BY 1")
        expected = per_tenant.fetchall()
    assert [t for t, _ in expected] == list(TENANTS)
    for tenant, count in expected:
        assert con.execute("SELECT count(*) FROM raw.events WHERE tenant_id = ?", [tenant]).fetchone() == (count,)
    rebuild(con, registry, "tenant_events", 1)
    promote(con, registry, "tenant_events", 1)
    rebuild(con, registry, "tenant_events", 2)
    v1, v2, view = "projections.tenant_events_v1", "projections.tenant_events_v2", "analytics.tenant_events"
    fresh_acme = rows_of(con, v1, "acme")
    others_v1 = rows_of(con, v1, "acme", other=True)

    # A bad tenant name, or a projection that is not per tenant, is refused before anything is written.
    before = snapshot(con)
    with pytest.raises(ConfigurationError, match=r"tenant 'acm' has no events in the lake \(did you mean 'acme'"):
        rebuild_tenant(con, registry, "tenant_events", 1, "acm")
    with pytest.raises(ConfigurationError, match=r"tenant 'nobody'.*acme, globex, initech"):
        promote_tenant(con, registry, "tenant_events", 2, "nobody", force=True)
    with pytest.raises(ConfigurationError, match=r"cart_summary v2 .* is not per tenant"):
        rebuild_tenant(con, registry, "cart_summary", 2, "acme")
    assert snapshot(con) == before

    # Rebuilding acme's rows of the live v1 (damaged here) restores them; the other tenants' rows stay as they were.
    con.execute(f"UPDATE {v1} SET events = -1 WHERE tenant_id = 'acme'")
    result = rebuild_tenant(con, registry, "tenant_events", 1, "acme")
    assert rows_of(con, v1, "acme") == fresh_acme and result.rows == len(fresh_acme)
    assert rows_of(con, v1, "acme", other=True) == others_v1

    # acme moves to v2: the gate asks for a comparison of acme's rows, then only acme's rows of the view change.
    with pytest.raises(PromotionError, match="diff tenant_events 1 2 --tenant acme"):
        promote_tenant(con, registry, "tenant_events", 2, "acme")
    comparison, _ = compare_versions(con, registry, "tenant_events", 1, 2, tenant="acme")
    assert comparison.rows["changed"].count > 0 and comparison.rows["only_in_a"].count == 0
    promote_tenant(con, registry, "tenant_events", 2, "acme")
    assert tenant_versions(con, "tenant_events") == {"acme": 2}
    assert rows_of(con, view, "acme") == rows_of(con, v2, "acme") != fresh_acme
    assert rows_of(con, view, "acme", other=True) == others_v1
    # Byte-identical: EXCEPT both ways between the view's other tenants and v1's (hashes of whole rows too).
    for x, y in ((view, v1), (v1, view)):
        assert con.execute(
            f"SELECT count(*) FROM (SELECT * FROM {x} WHERE tenant_id <> 'acme' EXCEPT SELECT * FROM {y} "
            "WHERE tenant_id <> 'acme')"
        ).fetchone() == (0,)
    digest = "SELECT sum(hash(t)) FROM (SELECT * FROM {} WHERE tenant_id <> 'acme') AS t"
    assert con.execute(digest.format(view)).fetchone() == con.execute(digest.format(v1)).fetchone()

    # Rolling acme back serves v1's rows again; a whole promotion moves every tenant (the pin no longer counts).
    rollback_tenant(con, registry, "tenant_events", "acme")
    assert tenant_versions(con, "tenant_events") == {} and rows_of(con, view, "acme") == fresh_acme
    promote_tenant(con, registry, "tenant_events", 2, "acme")
    promote(con, registry, "tenant_events", 2, force=True)
    assert tenant_versions(con, "tenant_events") == {}
    assert set(con.execute(f"SELECT * FROM {view}").fetchall()) == set(con.execute(f"SELECT * FROM {v2}").fetchall())
    con.close()
