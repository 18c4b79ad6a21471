"""Chunked rebuilds: progress per chunk, resume after kill -9, the live version untouched, poison across chunks."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from projections import PoisonPolicy, Registry, Sql, discover
from projections.errors import PoisonEventError
from tests.warehouse.conftest import append_shop, with_projection
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import (
    dead_letters,
    list_versions,
    promote,
    rebuild,
    unfinished_rebuilds,
)

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 500  # events per chunk in these tests: a shop of ~3,000 events makes six chunks


@pytest.fixture(scope="module")
def registry() -> Registry:
    return discover(bundled=True, folder=None)


def rows_of(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[object, ...]]:
    return con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()


def lake_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    found = con.execute(
        "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = 'lake'"
    ).fetchall()
    return {str(r[0]) for r in found}


def test_ducklake_swaps_a_table_for_a_renamed_one_in_one_commit(lake_config: LakeConfig) -> None:
    """What the last commit of a rebuild relies on: DROP + ALTER TABLE RENAME in one DuckLake transaction."""
    con = open_lake(lake_config)
    con.execute("CREATE TABLE projections.t_v1 (k VARCHAR, n INTEGER)")
    con.execute("INSERT INTO projections.t_v1 VALUES ('old', 1)")
    con.execute("CREATE VIEW analytics.t AS SELECT * FROM projections.t_v1")
    reader = open_lake(lake_config, read_only=True)
    con.execute("BEGIN")
    con.execute("CREATE TABLE projections._staging_t_v1 (k VARCHAR, n INTEGER)")
    con.execute("COMMENT ON TABLE projections._staging_t_v1 IS 'the new one'")
    con.execute("COMMENT ON COLUMN projections._staging_t_v1.k IS 'the key'")
    con.execute("INSERT INTO projections._staging_t_v1 VALUES ('new', 2), ('new', 3)")
    con.execute("DROP TABLE projections.t_v1")
    con.execute("ALTER TABLE projections._staging_t_v1 RENAME TO t_v1")
    assert reader.execute("SELECT * FROM analytics.t").fetchall() == [("old", 1)]  # not committed yet
    con.execute("COMMIT")
    assert reader.execute("SELECT * FROM analytics.t ORDER BY n").fetchall() == [("new", 2), ("new", 3)]
    assert reader.execute(
        "SELECT comment FROM duckdb_tables() WHERE database_name = 'lake' AND table_name = 't_v1'"
    ).fetchall() == [("the new one",)]
    assert reader.execute(
        "SELECT comment FROM duckdb_columns() WHERE database_name = 'lake' AND table_name = 't_v1' "
        "AND column_name = 'k'"
    ).fetchall() == [("the key",)]
    # A swap rolled back leaves the table as it was.
    con.execute("BEGIN")
    con.execute("CREATE TABLE projections._staging_t_v1 (k VARCHAR, n INTEGER)")
    con.execute("DROP TABLE projections.t_v1")
    con.execute("ALTER TABLE projections._staging_t_v1 RENAME TO t_v1")
    con.execute("ROLLBACK")
    assert con.execute("SELECT count(*) FROM analytics.t").fetchone() == (2,)
    assert "projections._staging_t_v1" not in lake_tables(con)


@pytest.mark.parametrize("version", [1, 2])  # SQL and fold bodies
def test_progress_once_per_chunk_and_the_same_table_as_one_chunk(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry, version: int
) -> None:
    append_shop(store_dsn, 3_000)
    con = open_lake(lake_config)
    ingest(con, source)
    calls: list[int] = []
    whole = rebuild(con, registry, "cart_summary", version, progress=calls.append)
    assert whole.chunks == 1 and calls == [whole.events]  # a demo-sized projection stays one chunk
    reference = rows_of(con, f"projections.cart_summary_v{version}")
    calls.clear()
    chunked = rebuild(con, registry, "cart_summary", version, progress=calls.append, chunk_events=CHUNK)
    events = con.execute("SELECT count(*) FROM raw.events").fetchone()
    assert events is not None and chunked.events == events[0] == whole.events
    assert chunked.chunks == -(-chunked.events // CHUNK) == len(calls) > 1
    assert all(n > 0 for n in calls) and sum(calls) == chunked.events
    assert rows_of(con, f"projections.cart_summary_v{version}") == reference
    assert chunked.rows == whole.rows == len(reference) and chunked.resumed_chunks == 0
    assert unfinished_rebuilds(con) == []
    assert f"projections._staging_cart_summary_v{version}" not in lake_tables(con)
    (info,) = list_versions(con, "cart_summary")
    assert (info.state, info.rows, info.checkpoint) == ("ready", len(reference), chunked.checkpoint)


def run_child(lake_config: LakeConfig, version: int, pause_after: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.warehouse._lake_proc",
            "rebuild",
            lake_config.catalog,
            lake_config.data_path,
            "cart_summary",
            str(version),
            str(CHUNK),
            str(pause_after),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after_chunks(lake_config: LakeConfig, version: int, chunks: int) -> list[int]:
    """Run a chunked rebuild in a child process, SIGKILL it right after its chunk ``chunks`` committed."""
    child = run_child(lake_config, version, chunks)
    assert child.stdout is not None
    seen: list[int] = []
    try:
        for line in child.stdout:
            if line.startswith("chunk "):
                seen.append(int(line.split()[2]))
            if line.strip() == "paused":
                break
        else:
            raise AssertionError(f"the rebuild did not pause: {child.communicate(timeout=30)[1]}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL and len(seen) == chunks
    return seen


def test_kill_9_after_two_chunks_then_rerun_resumes_and_equals_an_uninterrupted_rebuild(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 3_000)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    promote(con, registry, "cart_summary", 1)
    reference = rows_of(con, "projections.cart_summary_v1")
    served = rows_of(con, "analytics.cart_summary")
    version_row = list_versions(con, "cart_summary")

    done = kill_after_chunks(lake_config, 1, 2)
    (unfinished,) = unfinished_rebuilds(con, "cart_summary")
    assert (unfinished.version, unfinished.chunks_done, unfinished.events_done) == (1, 2, sum(done))
    assert unfinished.chunks == -(-unfinished.events // CHUNK) > 2
    staged = con.execute("SELECT count(*) FROM projections._staging_cart_summary_v1").fetchone()
    assert staged is not None and 0 < staged[0] == unfinished.rows < len(reference)
    # Nothing live changed: the live table, the view and the version's record are as before.
    assert rows_of(con, "analytics.cart_summary") == served
    assert list_versions(con, "cart_summary") == version_row

    calls: list[int] = []
    resumed = rebuild(con, registry, "cart_summary", 1, progress=calls.append)
    assert resumed.resumed_chunks == 2 and resumed.chunks == unfinished.chunks
    assert calls[0] == sum(done)  # the chunks committed before the crash, then one call per chunk left
    assert len(calls) == 1 + unfinished.chunks - 2 and sum(calls) == resumed.events == unfinished.events
    assert rows_of(con, "projections.cart_summary_v1") == reference
    assert rows_of(con, "analytics.cart_summary") == reference
    assert resumed.rows == len(reference)
    assert unfinished_rebuilds(con) == [] and "projections._staging_cart_summary_v1" not in lake_tables(con)
    assert [(v.state, v.rows) for v in list_versions(con, "cart_summary")] == [("live", len(reference))]


def test_a_fingerprint_change_between_crash_and_rerun_starts_over(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 3_000)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    reference = rows_of(con, "projections.cart_summary_v1")
    kill_after_chunks(lake_config, 1, 2)
    (unfinished,) = unfinished_rebuilds(con, "cart_summary")
    projection = registry.get("cart_summary", 1)
    assert isinstance(projection.body, Sql)
    # The same meaning in other words: only the code's fingerprint differs.
    changed = with_projection(registry, "cart_summary", 1, body=Sql(projection.body.query + " /* reworded */"))
    assert changed.get("cart_summary", 1).fingerprint != unfinished.fingerprint
    calls: list[int] = []
    result = rebuild(con, changed, "cart_summary", 1, progress=calls.append, chunk_events=CHUNK)
    assert result.resumed_chunks == 0 and len(calls) == result.chunks and sum(calls) == result.events
    assert rows_of(con, "projections.cart_summary_v1") == reference
    (info,) = list_versions(con, "cart_summary")
    assert info.fingerprint == changed.get("cart_summary", 1).fingerprint
    assert unfinished_rebuilds(con) == []


@pytest.mark.parametrize("chunk_events", [CHUNK, None], ids=["chunks", "one transaction"])
def test_rebuilding_the_live_version_never_shows_readers_a_partial_table(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry, chunk_events: int | None
) -> None:
    append_shop(store_dsn, 2_000, transactions=3)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    promote(con, registry, "cart_summary", 1)
    before = list_versions(con, "cart_summary")[0].rows
    append_shop(store_dsn, 1_500, seed=3, transactions=2)
    ingest(con, source)  # not projected: the rebuild brings these carts in
    seen: list[int] = []
    failures: list[BaseException] = []
    stop, reading = threading.Event(), threading.Event()

    def reader() -> None:
        reader_con = open_lake(lake_config, read_only=True)
        try:
            while not stop.is_set():
                row = reader_con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone()
                assert row is not None
                seen.append(int(row[0]))
                reading.set()
        except BaseException as exc:
            failures.append(exc)
        finally:
            reading.set()
            reader_con.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert reading.wait(timeout=60)
        result = rebuild(con, registry, "cart_summary", 1, chunk_events=chunk_events)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    after = result.rows
    assert (result.chunks > 2 if chunk_events else result.chunks == 1) and after > before
    assert seen and set(seen) <= {before, after}, sorted(set(seen))
    assert seen[0] == before  # reads ran while the chunks were committed
    assert con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone() == (after,)


def test_poison_stops_a_chunked_rebuild_naming_the_first_event_and_skip_lists_them_all(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 3_000)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    promote(con, registry, "cart_summary", 1)
    served = rows_of(con, "analytics.cart_summary")
    # Poison in several chunks: the last ItemAdded of the lake and two earlier ones.
    bad = con.execute(
        "SELECT event_id, global_position FROM raw.events WHERE event_type = 'ItemAdded' "
        "ORDER BY transaction_id DESC, global_position DESC"
    ).fetchall()
    poisoned = [bad[0], bad[len(bad) // 2], bad[-1]]
    for event_id, _ in poisoned:
        con.execute("UPDATE raw.events SET data = '{\"oops\": 1}' WHERE event_id = ?", [event_id])
    first = min(poisoned, key=lambda r: int(r[1]))  # one transaction here: reading order is by position
    stopping = with_projection(registry, "cart_summary", 1, poison=PoisonPolicy(live="skip", rebuild="stop"))
    with pytest.raises(PoisonEventError, match=f"{first[0]}.*2 more poison events") as raised:
        rebuild(con, stopping, "cart_summary", 1, chunk_events=CHUNK)
    assert raised.value.event_id == first[0]
    assert rows_of(con, "analytics.cart_summary") == served  # nothing live changed
    assert [v.state for v in list_versions(con, "cart_summary")] == ["live"]

    result = rebuild(con, registry, "cart_summary", 1, chunk_events=CHUNK)  # skips by default
    assert result.chunks > 2 and result.dead_letters == 3
    assert {d.event_id for d in dead_letters(con, name="cart_summary")} == {str(e) for e, _ in poisoned}
    whole = rebuild(con, registry, "cart_summary", 1)
    assert whole.chunks == 1 and whole.dead_letters == 3 and whole.rows == result.rows
    assert len(dead_letters(con, name="cart_summary")) == 3
