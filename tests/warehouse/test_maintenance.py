"""Lake maintenance on real DuckLake files: expiry, cleanup, merging, and what is never expired."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from eventstore.errors import ConfigurationError
from eventstore.settings import parse_duration
from projections import discover
from tests.warehouse.conftest import append_shop
from warehouse.ingest import compact, ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.maintenance import lake_size, maintain, tidy_table
from warehouse.sources import StoreSource
from warehouse.versions import project, rebuild

LIVE_QUERIES = (
    "SELECT * FROM analytics.cart_summary ORDER BY ALL",
    "SELECT * FROM analytics.daily_revenue ORDER BY ALL",
    "SELECT * FROM analytics.product_sales ORDER BY ALL",
    "SELECT count(*), sum(global_position), count(DISTINCT event_id) FROM raw.all_events",
)


def answers(con: duckdb.DuckDBPyConnection) -> list[list[tuple[object, ...]]]:
    return [con.execute(q).fetchall() for q in LIVE_QUERIES]


def past_answers(con: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    """raw.events as every fourth snapshot saw it (time travel)."""
    snapshots = con.execute(
        "SELECT snapshot_id FROM ducklake_snapshots('lake') WHERE snapshot_id > 0 AND snapshot_id % 4 = 1"
    ).fetchall()
    return [
        con.execute(f"SELECT {s}, count(*), sum(global_position) FROM raw.events AT (VERSION => {s})").fetchall()[0]
        for (s,) in snapshots
    ]


def test_maintain_brings_the_data_path_back_to_the_live_data(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    registry = discover()
    con = open_lake(lake_config)
    append_shop(store_dsn, 3_000, transactions=6)
    ingest(con, source, batch_size=500, compact_after=None)  # six small commits
    project(con, registry)
    for _ in range(3):  # rebuilds of every projection: each leaves the old table's files behind
        for name in registry.names():
            rebuild(con, registry, name, registry.versions(name)[0])
    compact(con)  # raw.events merged: its small files stay for the snapshots before
    before = answers(con)
    grown = lake_size(con)
    assert grown.disk_bytes is not None and grown.disk_bytes > 2 * grown.live_bytes, grown
    history = past_answers(con)
    kept = maintain(con, older_than=timedelta(days=7))  # every snapshot is younger than a week: none expires
    assert kept.expired == [] and answers(con) == before and past_answers(con)[: len(history)] == history
    in_window = maintain(con, older_than=timedelta(0), window=timedelta(days=1))
    assert in_window.expired == [] and past_answers(con)[: len(history)] == history, "the window keeps them all"

    # A rebuild under way (its row in meta.rebuilds) keeps every snapshot since it started.
    middle, started = con.execute(
        "SELECT snapshot_id, snapshot_time FROM ducklake_snapshots('lake') ORDER BY snapshot_id LIMIT 1 OFFSET 10"
    ).fetchone() or (0, None)
    con.execute("INSERT INTO meta.rebuilds (name, version, started_at) VALUES ('cart_summary', 9, ?)", [started])
    during = maintain(con, older_than=timedelta(0), dry_run=True)
    assert during.expired and max(during.expired) < middle and "cart_summary v9" in during.pins.reasons[0]
    con.execute("DELETE FROM meta.rebuilds WHERE version = 9")

    dry = maintain(con, older_than=timedelta(0), dry_run=True)
    assert dry.expired and lake_size(con).disk_bytes == dry.before.disk_bytes, "a dry run deletes nothing"

    done = maintain(con, older_than=timedelta(0))
    assert done.expired and done.files_deleted > 0 and done.tables_merged > 0
    assert done.after.disk_bytes is not None and done.before.disk_bytes is not None
    assert done.after.disk_bytes < done.before.disk_bytes
    after = lake_size(con)
    assert after.disk_bytes is not None and after.disk_bytes <= 1.5 * after.live_bytes, after
    assert after.disk_bytes == done.after.disk_bytes and after.reclaimable_bytes == done.after.reclaimable_bytes
    assert answers(con) == before
    con.close()
    con = open_lake(lake_config, read_only=True)  # a new session reads the same lake
    assert answers(con) == before
    con.close()


def test_durations_parse_or_name_the_fix() -> None:
    assert parse_duration("7d") == timedelta(days=7) and parse_duration("0s") == timedelta(0)
    assert parse_duration("12h") == timedelta(hours=12) and parse_duration("30m") == timedelta(minutes=30)
    for bad in ("7", "seven days", "-1d", "3y"):
        with pytest.raises(ConfigurationError, match=r"is not a duration: use a number and a unit, e.g. 7d"):
            parse_duration(bad, "--older-than")


def _inlined_rows(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """Row versions DuckLake keeps in its catalog for ``table`` (live and superseded)."""
    names = con.execute(
        "SELECT d.table_name FROM __ducklake_metadata_lake.ducklake_inlined_data_tables AS d "
        "JOIN __ducklake_metadata_lake.ducklake_table AS t ON t.table_id = d.table_id "
        "WHERE t.table_name = ? AND t.end_snapshot IS NULL",
        [table],
    ).fetchall()
    return sum(
        int((con.execute(f"SELECT count(*) FROM __ducklake_metadata_lake.{n}").fetchone() or (0,))[0]) for (n,) in names
    )


def test_tidy_table_drops_superseded_row_versions_from_reads_and_keeps_history(lake_config: LakeConfig) -> None:
    """follow updates its checkpoint rows every cycle: each update left a row version every later read copied."""
    con = open_lake(lake_config)
    con.execute("CREATE TABLE meta.tidy_probe (k INTEGER, v INTEGER)")
    con.execute("INSERT INTO meta.tidy_probe VALUES (1, 0), (2, 0)")
    (first,) = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone() or (0,)
    for i in range(30):
        con.execute("UPDATE meta.tidy_probe SET v = ? WHERE k = 1", [i + 1])
    assert _inlined_rows(con, "tidy_probe") > 30  # every version so far, read by every SELECT
    assert tidy_table(con, "meta", "tidy_probe") == (1, 0)  # one file, no deletes
    assert _inlined_rows(con, "tidy_probe") == 0
    assert con.execute("SELECT * FROM meta.tidy_probe ORDER BY k").fetchall() == [(1, 30), (2, 0)]
    past = con.execute(f"SELECT * FROM meta.tidy_probe AT (VERSION => {first}) ORDER BY k").fetchall()
    assert past == [(1, 0), (2, 0)]  # time travel still reaches before it
    for i in range(3):  # later changes, tidied again: still one file
        con.execute("UPDATE meta.tidy_probe SET v = ? WHERE k = 2", [i])
    assert tidy_table(con, "meta", "tidy_probe") == (1, 0)
    assert con.execute("SELECT * FROM meta.tidy_probe ORDER BY k").fetchall() == [(1, 30), (2, 2)]
    con.close()
