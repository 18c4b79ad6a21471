"""A rebuild in shards built by independent connections, in any order, then swapped in once: the same
table as a one-process rebuild; a missing shard blocks the swap and names itself; built shards are kept."""

from __future__ import annotations

import pytest

from eventstore.errors import ConfigurationError
from projections import Registry, discover
from tests.warehouse.conftest import append_shop
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import build_shard, finish_shards, list_versions, plan_shards, promote, rebuild


@pytest.fixture(scope="module")
def registry() -> Registry:
    return discover(bundled=True, folder=None)


def rows(lake_config: LakeConfig, table: str) -> list[tuple[object, ...]]:
    con = open_lake(lake_config, read_only=True)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("version", [1, 2])  # SQL and fold bodies
def test_shards_in_any_order_give_the_one_process_table(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry, version: int
) -> None:
    append_shop(store_dsn, 2_500)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", version)
    promote(con, registry, "cart_summary", version)
    reference = rows(lake_config, f"projections.cart_summary_v{version}")
    before = {v.version: v for v in list_versions(con, "cart_summary")}[version]

    plan = plan_shards(con, registry, "cart_summary", version, 3)
    assert plan.shards == 3 and plan.done == () and plan.until == before.checkpoint
    # Each shard from a connection of its own (another process, another machine), out of order.
    for shard in (2, 0):
        worker = open_lake(lake_config)
        build_shard(worker, registry, "cart_summary", version, shard)
        worker.close()
    with pytest.raises(ConfigurationError, match=r"shard 1 is not built yet \(2 of 3 of cart_summary v\d are\)"):
        finish_shards(con, registry, "cart_summary", version)
    assert rows(lake_config, f"projections.cart_summary_v{version}") == reference  # the live table untouched
    again = plan_shards(con, registry, "cart_summary", version, 3)  # a rerun continues the same plan
    assert (again.run_id, again.done) == (plan.run_id, (0, 2))
    first = build_shard(con, registry, "cart_summary", version, 1)
    assert build_shard(con, registry, "cart_summary", version, 1) == first  # built twice: the first stands
    result = finish_shards(con, registry, "cart_summary", version)
    assert result.rows == len(reference) and result.checkpoint == before.checkpoint
    assert rows(lake_config, f"projections.cart_summary_v{version}") == reference
    assert rows(lake_config, "analytics.cart_summary") == reference
    after = {v.version: v for v in list_versions(con, "cart_summary")}[version]
    assert (after.state, after.rows) == ("live", len(reference))
    tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'lake'").fetchall()
    assert not [t for (t,) in tables if str(t).startswith(("_shard", "_staging"))]
    con.close()


def test_a_projection_keyed_across_streams_is_not_sharded(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    across = next(p for p in registry if not p.keyed_by_stream)
    with pytest.raises(ConfigurationError, match="cannot be split by stream"):
        plan_shards(con, registry, across.name, across.version, 2)
    con.close()
