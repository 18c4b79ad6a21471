"""Bad input gives a clear error and loses nothing already in the lake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventstore.adapters import NativeAdapter
from eventstore.connection import connect
from eventstore.errors import StoreUnavailableError
from tests.warehouse.conftest import append_shop
from warehouse.errors import LakeConfigurationError, LakeUnavailableError
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource


def count(config: LakeConfig) -> int:
    con = open_lake(config, read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM raw.events").fetchone()
        assert row is not None
        return int(row[0])
    finally:
        con.close()


def test_unreachable_store_fails_clearly_and_keeps_the_lake(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    appended = append_shop(store_dsn, 300)
    con = open_lake(lake_config)
    ingest(con, source)
    with (
        NativeAdapter("postgresql://shop:topsecret@127.0.0.1:1/shop") as gone,
        pytest.raises(StoreUnavailableError) as caught,
    ):
        ingest(con, StoreSource(gone))
    assert "127.0.0.1:1" in str(caught.value) and "topsecret" not in str(caught.value)
    assert caught.value.retryable
    con.close()
    assert count(lake_config) == appended


def test_unreachable_catalog_is_transient_and_hides_the_password(tmp_path: Path) -> None:
    config = LakeConfig.from_settings(
        __import__("eventstore.settings", fromlist=["Settings"]).Settings(
            home=tmp_path, lake="postgresql://lake:topsecret@127.0.0.1:1/lake", lake_data=str(tmp_path / "data")
        )
    )
    with pytest.raises(LakeUnavailableError) as caught:
        open_lake(config)
    assert "cannot reach the lake's catalog" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_corrupted_sqlite_catalog_is_a_clear_terminal_error(tmp_path: Path) -> None:
    catalog = tmp_path / "lake.sqlite"
    catalog.write_bytes(b"this is not a database" * 100)
    config = LakeConfig("sqlite", str(catalog), str(tmp_path / "data") + "/")
    with pytest.raises(LakeConfigurationError) as caught:
        open_lake(config)
    assert "cannot open the lake's catalog" in str(caught.value) and str(catalog) in str(caught.value)
    assert catalog.read_bytes() == b"this is not a database" * 100  # left as found, for forensics


def test_damaged_postgres_catalog_is_a_clear_error_and_the_data_stays(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    con.close()
    with connect(lake_config.catalog, autocommit=True) as conn:
        conn.execute("ALTER TABLE ducklake_snapshot RENAME TO ducklake_snapshot_damaged")
    with pytest.raises(LakeConfigurationError, match="cannot open the lake's catalog"):
        open_lake(lake_config)
    with connect(lake_config.catalog, autocommit=True) as conn:
        conn.execute("ALTER TABLE ducklake_snapshot_damaged RENAME TO ducklake_snapshot")
    assert count(lake_config) == 200


def test_locked_sqlite_catalog_waits_out_or_fails_transient_and_loses_nothing(
    source: StoreSource, store_dsn: str, tmp_path: Path
) -> None:
    appended = append_shop(store_dsn, 300)
    config = LakeConfig("sqlite", str(tmp_path / "lake.sqlite"), str(tmp_path / "data") + "/")
    con = open_lake(config)
    ingest(con, source, batch_size=100)
    con.close()
    more = append_shop(store_dsn, 200, seed=9)
    # Another process holds the catalog (SQLite locks are per process: a lock of this one would not count).
    locker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sqlite3, sys; c = sqlite3.connect({config.catalog!r}); "
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        with pytest.raises(LakeUnavailableError, match="locked by another process"):
            con = open_lake(config)
            ingest(con, source, batch_size=100)
    finally:
        assert locker.stdin is not None
        locker.stdin.close()
        locker.wait(timeout=30)
        assert locker.stdout is not None
        locker.stdout.close()
    con = open_lake(config)
    assert ingest(con, source, batch_size=100).events == more
    assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw.events").fetchone() == (
        appended + more,
        appended + more,
    )


def test_data_path_that_cannot_be_written_is_refused_before_any_commit(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, tmp_path: Path
) -> None:
    appended = append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    con.close()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # Root ignores permission bits, but nobody can create a folder inside a regular file.
    broken = LakeConfig(lake_config.catalog_kind, lake_config.catalog, str(blocker / "data") + "/")
    with pytest.raises(LakeConfigurationError, match="is not a writable folder") as caught:
        open_lake(broken)
    assert "PROJECTIONIST_LAKE_DATA" in str(caught.value)
    assert count(lake_config) == appended
