"""Archiving in the store: only what the lake's cold tier verifiably holds, each kind its own way, crash-safe."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from eventstore.adapters import (
    ArchiveNotSupportedError,
    EmmettAdapter,
    EventsourcingAdapter,
    MartenAdapter,
    NativeAdapter,
)
from eventstore.adapters.writers import EMMETT_WRITER_DIR, append_demo_shop_marten, append_demo_shop_store
from eventstore.connection import connect
from eventstore.native_store import NewEvent, append
from eventstore.settings import Settings
from tests.warehouse.conftest import append_shop
from warehouse.archive import archive_in_store, archive_lake, verified_streams
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource

ROOT = Path(__file__).resolve().parents[2]
ES_SETTINGS = Settings(home=Path("/nonexistent"), store_kind="eventsourcing")


def store_rows(dsn: str, query: str) -> list[tuple[object, ...]]:
    with connect(dsn) as conn:
        return conn.execute(query).fetchall()  # type: ignore[no-any-return]


def lake_events(con: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    return con.execute("SELECT * FROM raw.all_events ORDER BY transaction_id, global_position").fetchall()


def native_ids(dsn: str) -> list[str]:
    """Every event id of the native store, hot and archived (a duplicate would show twice)."""
    query = "SELECT event_id::text FROM events"
    if store_rows(dsn, "SELECT to_regclass('events_archive') IS NOT NULL") == [(True,)]:
        query += " UNION ALL SELECT event_id::text FROM events_archive"
    return sorted(str(r[0]) for r in store_rows(dsn, query))


def archived_in_lake(lake_config: LakeConfig, source: StoreSource, store_dsn: str) -> duckdb.DuckDBPyConnection:
    """A lake of 40 finished carts, all in the cold tier, and one open cart (hot)."""
    append_shop(store_dsn, 200, seed=5)
    with connect(store_dsn) as conn:
        append(conn, "cart-open", "cart", [NewEvent("CartOpened", {"customer_id": "c1"})])
        conn.commit()
    con = open_lake(lake_config)
    ingest(con, source)
    assert archive_lake(con, "0s").streams == 40
    return con


def test_native_in_store_moves_verified_streams_and_a_later_ingest_neither_rereads_nor_loses(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    con = archived_in_lake(lake_config, source, store_dsn)
    before = lake_events(con)
    ids = native_ids(store_dsn)
    # One archived cart gets a late event the lake has not read: that stream must stay in the store.
    late = str(store_rows(store_dsn, "SELECT min(stream_id) FROM events WHERE stream_id <> 'cart-open'")[0][0])
    with connect(store_dsn) as conn:
        append(conn, late, "cart", [NewEvent("CartReopened", {})], expected_version=5)
        conn.commit()

    with NativeAdapter(store_dsn) as adapter:
        dry = archive_in_store(con, adapter, dry_run=True)
        assert (len(dry.streams), dry.events, list(dry.skipped)) == (39, 195, [late])
        assert store_rows(store_dsn, "SELECT count(*) FROM events") == [(202,)]
        run = archive_in_store(con, adapter)
    assert (len(run.streams), run.events, run.action) == (39, 195, "moved to events_archive")
    assert "changed after archiving in the lake" in run.skipped[late]
    assert store_rows(store_dsn, "SELECT count(*) FROM events") == [(7,)]  # the late cart and the open one
    reopened = store_rows(store_dsn, "SELECT event_id::text FROM events WHERE event_type = 'CartReopened'")
    assert native_ids(store_dsn) == sorted([*ids, str(reopened[0][0])])
    assert lake_events(con) == before  # the lake is unchanged
    done = con.execute("SELECT count(*) FROM meta.archived_streams WHERE store_archived_at IS NOT NULL").fetchone()
    assert done == (39,)

    assert ingest(con, source).events == 1  # the late event only: nothing re-read, nothing lost
    assert sorted(str(r[0]) for r in con.execute("SELECT event_id FROM raw.all_events").fetchall()) == native_ids(
        store_dsn
    )
    with NativeAdapter(store_dsn) as adapter:
        again = archive_in_store(con, adapter)
    assert again.streams == () and "new events in raw.events" in again.skipped[late]


def test_native_delete_and_a_crash_between_the_store_and_the_lake_record(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    con = archived_in_lake(lake_config, source, store_dsn)
    before = lake_events(con)
    with NativeAdapter(store_dsn) as adapter:
        # The store step commits, then the process dies before the lake records it ...
        verified, _ = verified_streams(con)
        with connect(store_dsn) as conn:
            assert adapter.archive_streams(conn, verified, delete=True).events == 200
            conn.commit()
        # ... and the next run finds them done, changes nothing more and records them.
        run = archive_in_store(con, adapter, delete=True)
    assert (len(run.streams), run.events, run.action) == (40, 0, "deleted")
    assert store_rows(store_dsn, "SELECT count(*), to_regclass('events_archive') FROM events") == [(1, None)]
    assert lake_events(con) == before
    assert ingest(con, source).events == 0


def kill_when_paused(step: str, lake_config: LakeConfig, store_dsn: str) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.warehouse._archive_proc",
            step,
            lake_config.catalog,
            lake_config.data_path,
            store_dsn,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        for line in child.stdout:
            if line.strip() == "paused":
                break
        else:
            raise AssertionError(f"the archive did not pause: {child.communicate(timeout=30)[1]}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL


def test_kill_9_in_the_middle_of_either_step_loses_and_duplicates_nothing(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_shop(store_dsn, 100, seed=6)
    con = open_lake(lake_config)
    ingest(con, source)
    before = lake_events(con)
    ids = native_ids(store_dsn)

    kill_when_paused("lake", lake_config, store_dsn)  # killed before the lake's commit
    assert lake_events(con) == before
    assert con.execute("SELECT count(*) FROM archive.events").fetchone() == (0,)
    assert archive_lake(con, "0s").streams == 20
    assert lake_events(con) == before

    kill_when_paused("store", lake_config, store_dsn)  # killed before the store's commit
    assert native_ids(store_dsn) == ids and store_rows(store_dsn, "SELECT count(*) FROM events") == [(100,)]
    with NativeAdapter(store_dsn) as adapter:
        assert archive_in_store(con, adapter).events == 100
    assert native_ids(store_dsn) == ids and store_rows(store_dsn, "SELECT count(*) FROM events") == [(0,)]
    assert ingest(con, source).events == 0
    assert lake_events(con) == before


def test_marten_in_store_sets_is_archived_and_the_reader_reads_on(lake_config: LakeConfig, fresh_database: str) -> None:
    append_demo_shop_marten(fresh_database, events=150, seed=8)
    with MartenAdapter(fresh_database) as adapter:
        source = StoreSource(adapter)
        con = open_lake(lake_config)
        ingest(con, source)
        # Marten stores event types as its snake-case aliases: the closing types are configured as such.
        lake = archive_lake(con, "0s", closing={"cart": ("cart_confirmed", "cart_cancelled")})
        assert lake.streams > 0
        before = lake_events(con)
        run = archive_in_store(con, adapter)
        assert (len(run.streams), run.events, run.action) == (lake.streams, lake.events, "is_archived")
        flagged = store_rows(
            fresh_database,
            "SELECT count(*) FILTER (WHERE e.is_archived), count(DISTINCT e.stream_id) FILTER (WHERE s.is_archived) "
            "FROM mt_events e JOIN mt_streams s ON s.id = e.stream_id",
        )
        assert flagged == [(lake.events, lake.streams)]
        assert lake_events(con) == before
        append_demo_shop_marten(fresh_database, events=40, seed=9)
        total = store_rows(fresh_database, "SELECT count(*) FROM mt_events")[0][0]
        assert ingest(con, source).events == int(total) - len(before)  # type: ignore[call-overload]
        row = con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw.all_events").fetchone()
        assert row == (total, total)


def test_eventsourcing_says_why_it_cannot_archive_in_the_store(fresh_database: str) -> None:
    append_demo_shop_store("eventsourcing", fresh_database, events=20)
    adapter = EventsourcingAdapter.from_settings(ES_SETTINGS, fresh_database)
    with adapter, connect(fresh_database) as conn, pytest.raises(ArchiveNotSupportedError, match="not supported"):
        adapter.archive_streams(conn, {})


@pytest.mark.skipif(not (EMMETT_WRITER_DIR / "node_modules").exists(), reason="Emmett's npm package is not installed")
def test_emmett_in_store_sets_its_archived_flag_and_the_reader_reads_on(
    lake_config: LakeConfig, fresh_database: str
) -> None:
    append_demo_shop_store("emmett", fresh_database, events=120)
    with EmmettAdapter(fresh_database) as adapter:
        source = StoreSource(adapter)
        con = open_lake(lake_config)
        ingest(con, source)
        lake = archive_lake(con, "0s")
        before = lake_events(con)
        run = archive_in_store(con, adapter)
        assert (len(run.streams), run.events) == (lake.streams, lake.events) and lake.streams > 0
        flagged = store_rows(fresh_database, "SELECT count(*) FROM emt_messages WHERE is_archived")
        assert flagged == [(lake.events,)]
        assert lake_events(con) == before
        assert ingest(con, source).events == 0
