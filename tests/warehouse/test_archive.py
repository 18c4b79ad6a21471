"""The lake's cold tier: finished streams move to archive.events and nothing anybody reads changes."""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pytest

from eventstore.connection import connect
from eventstore.errors import ConfigurationError
from eventstore.native_store import NewEvent, append
from projections import Registry, discover
from tests.pipelines.lakecheck import assert_versions_equal_fresh_computation
from tests.warehouse.conftest import append_shop, store_ids
from warehouse.archive import archive_lake, closing_event_types, parse_duration
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import project, rebuild


@pytest.fixture(scope="module")
def registry() -> Registry:
    return discover(bundled=True, folder=None)


def rebuild_all(con: duckdb.DuckDBPyConnection, registry: Registry) -> list[str]:
    tables = []
    for projection in registry:
        rebuild(con, registry, projection.name, projection.version)
        tables.append(f"{projection.name}_v{projection.version}")
    return tables


def keep(con: duckdb.DuckDBPyConnection, relation: str, name: str) -> None:
    """A copy of ``relation`` outside the lake (DuckDB's in-memory catalog)."""
    con.execute(f"CREATE OR REPLACE TABLE memory.main.{name} AS SELECT * FROM {relation}")


def differs(con: duckdb.DuckDBPyConnection, relation: str, name: str) -> tuple[int, int, int]:
    """Rows only in ``relation``, rows only in the kept copy, rows in ``relation`` (EXCEPT ALL both ways)."""
    row = con.execute(
        f"SELECT (SELECT count(*) FROM (SELECT * FROM {relation} EXCEPT ALL SELECT * FROM memory.main.{name})), "
        f"(SELECT count(*) FROM (SELECT * FROM memory.main.{name} EXCEPT ALL SELECT * FROM {relation})), "
        f"(SELECT count(*) FROM {relation})"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def open_cart(store_dsn: str, stream_id: str) -> None:
    with connect(store_dsn) as conn:
        append(conn, stream_id, "cart", [NewEvent("CartOpened", {"customer_id": "c1"})])
        conn.commit()


_ANALYST_QUERIES = {
    "all_events": "(SELECT * FROM raw.all_events)",
    "per_type": "(SELECT event_type, event_version, count(*) AS n FROM raw.all_events GROUP BY ALL)",
    "per_day": "(SELECT recorded_at::DATE AS day, count(DISTINCT stream_id) AS s FROM raw.all_events GROUP BY ALL)",
}


def test_archive_then_rebuild_equals_before_and_a_later_ingest_neither_rereads_nor_loses(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 400, seed=1)
    open_cart(store_dsn, "cart-still-open")
    con = open_lake(lake_config)
    ingest(con, source)
    tables = rebuild_all(con, registry)
    for table in tables:
        keep(con, f"projections.{table}", table)
    for name, query in _ANALYST_QUERIES.items():
        keep(con, query, name)

    run = archive_lake(con, "0s")

    assert run.streams == 80 and run.events == 400  # every bulk cart is closed; the open one stays hot
    assert con.execute("SELECT DISTINCT stream_id FROM raw.events").fetchall() == [("cart-still-open",)]
    assert con.execute("SELECT count(*) FROM archive.events").fetchone() == (400,)
    recorded = con.execute("SELECT tier, streams, events, checksum FROM meta.archive_runs").fetchall()
    assert recorded == [("lake", 80, 400, run.checksum)]
    rebuild_all(con, registry)
    for table in tables:
        only_now, only_before, rows = differs(con, f"projections.{table}", table)
        assert (only_now, only_before) == (0, 0) and rows > 0, table
    for name, query in _ANALYST_QUERIES.items():
        assert differs(con, query, name)[:2] == (0, 0), name

    # Later events: new carts, and the open cart closes. The ingest reads only those.
    added = append_shop(store_dsn, 100, seed=2)
    with connect(store_dsn) as conn:
        append(conn, "cart-still-open", "cart", [NewEvent("CartCancelled", {"reason": "late"})], expected_version=1)
        conn.commit()
    assert ingest(con, source).events == added + 1
    lake = con.execute("SELECT event_id FROM raw.all_events").fetchall()
    assert sorted(r[0] for r in lake) == sorted(store_ids(store_dsn))
    project(con, registry)
    assert assert_versions_equal_fresh_computation(con, nonempty=True) == len(tables)

    # The once-open cart is finished now: the next run moves it with the new carts, whole.
    second = archive_lake(con, "0s")
    assert (second.streams, second.events) == (21, 102)
    assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (0,)
    assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw.all_events").fetchone() == (502, 502)


def test_cutoff_dry_run_and_nothing_to_do_commit_nothing(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_shop(store_dsn, 100, seed=3)  # carts recorded from 2026-01-01 00:00:06, 7 s apart
    con = open_lake(lake_config)
    ingest(con, source)
    snapshot = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()
    now = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)  # 60 s in: the carts whose last event came before 00:00:30
    assert archive_lake(con, "30s", now=now, dry_run=True).streams == 4
    assert archive_lake(con, "1d", now=now).run_id is None
    assert con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone() == snapshot
    assert con.execute("SELECT count(*) FROM archive.events").fetchone() == (0,)
    run = archive_lake(con, "30s", now=now)
    assert (run.streams, run.events) == (4, 20)
    assert archive_lake(con, "30s", now=now).run_id is None  # idempotent: nothing left to move


def test_closing_types_and_durations_and_their_errors() -> None:
    assert closing_event_types({}) == {"cart": ("CartCancelled", "CartConfirmed")}
    configured = {"PROJECTIONIST_CLOSING_EVENT_TYPES": "order:Shipped, Cancelled; *:Deleted"}
    assert closing_event_types(configured) == {"order": ("Cancelled", "Shipped"), "*": ("Deleted",)}
    with pytest.raises(ConfigurationError, match="PROJECTIONIST_CLOSING_EVENT_TYPES part 'order'"):
        closing_event_types({"PROJECTIONIST_CLOSING_EVENT_TYPES": "order"})
    assert parse_duration("12h").total_seconds() == 43200 and parse_duration("0s").total_seconds() == 0
    with pytest.raises(ConfigurationError, match="--older-than '7 days' is not a duration"):
        parse_duration("7 days")


def test_a_lake_made_before_the_cold_tier_is_upgraded_when_opened(lake_config: LakeConfig) -> None:
    con = open_lake(lake_config)
    con.execute("BEGIN")
    con.execute("CREATE OR REPLACE VIEW raw.all_events AS SELECT * FROM raw.events")
    con.execute("DROP TABLE archive.events")
    con.execute("COMMIT")
    con.close()
    con = open_lake(lake_config)
    plan = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'all_events'").fetchone()
    assert plan is not None and "archive.events" in plan[0]
    assert con.execute("SELECT count(*) FROM raw.all_events").fetchone() == (0,)
