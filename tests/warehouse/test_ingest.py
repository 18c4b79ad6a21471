"""Ingest into a real DuckLake (PostgreSQL catalog) from a real native store."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import duckdb
import pytest

from eventstore.adapters import NativeAdapter
from eventstore.connection import connect
from eventstore.native_store import NewEvent, StreamAppend, append_streams
from tests.warehouse.conftest import append_shop, store_ids
from warehouse.errors import LakeConfigurationError
from warehouse.ingest import STORE_ALIAS, compact, ingest, lake_checkpoint, table_files
from warehouse.lake import RAW_EVENT_COLUMNS, LakeConfig, open_lake
from warehouse.sources import StoreSource

#: The two ways a native batch is read: through the (transaction_id, global_position) index, or by DuckDB's
#: parallel scan of the table (a batch that is a large share of it). The same events must land either way.
READ_PATHS = {"index": 0, "scan": 1_000_000}


@pytest.fixture(params=sorted(READ_PATHS))
def read_path(request: pytest.FixtureRequest, source: StoreSource) -> str:
    """Every batch of ``source`` read one way (NativeAdapter's share knob: 0 never scans, a large one always)."""
    source.adapter._parallel_share = READ_PATHS[request.param]  # type: ignore[attr-defined]
    return str(request.param)


def lake_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [
        str(r[0])
        for r in con.execute("SELECT event_id FROM raw.events ORDER BY transaction_id, global_position").fetchall()
    ]


def snapshot(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()
    assert row is not None
    return int(row[0])


def test_ingest_lands_every_event_once_with_the_contract_columns(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, read_path: str
) -> None:
    appended = append_shop(store_dsn, 2_000)
    con = open_lake(lake_config)
    result = ingest(con, source, batch_size=700)
    assert result.events == appended
    assert result.batches == -(-appended // 700)
    assert result.scanned == (result.batches if read_path == "scan" else 0)
    assert lake_ids(con) == store_ids(store_dsn)
    described = con.execute("DESCRIBE raw.events").fetchall()
    aliases = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
    assert [(r[0], r[1]) for r in described] == [(n, aliases.get(k, k)) for n, k, _ in RAW_EVENT_COLUMNS]
    with connect(store_dsn) as conn:
        expected = conn.execute(
            "SELECT event_id::text, metadata->>'correlation_id', metadata->>'causation_id', data::text, "
            "transaction_id::text::bigint FROM events ORDER BY global_position LIMIT 50"
        ).fetchall()
    got = con.execute(
        "SELECT event_id, correlation_id, causation_id, data, transaction_id, source, is_archived, tenant_id, "
        "ingested_at IS NOT NULL FROM raw.all_events ORDER BY global_position LIMIT 50"
    ).fetchall()
    for (eid, corr, caus, data, tx), row in zip(expected, got, strict=True):
        assert row[:5] == (eid, corr, caus, data, tx)
        assert row[5:] == ("native:public.events", False, None, True)
    checkpoint, events = lake_checkpoint(con)
    assert checkpoint == result.head.last and events == appended


def test_rerun_ingests_nothing_and_writes_no_snapshot(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_shop(store_dsn, 500)
    con = open_lake(lake_config)
    ingest(con, source)
    before = snapshot(con)
    again = ingest(con, source)
    assert again.events == 0 and again.batches == 0
    assert snapshot(con) == before
    con.close()
    reopened = open_lake(lake_config)
    assert snapshot(reopened) == before  # opening an existing lake is no write either
    # Nothing settled after the checkpoint: the store is not even attached (an idle `follow` cycle).
    idle = ingest(reopened, source)
    assert idle.events == 0 and idle.checkpoint == again.checkpoint == idle.head.last
    attached = {str(r[0]) for r in reopened.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
    assert STORE_ALIAS not in attached
    assert snapshot(reopened) == before


def test_ingest_after_more_appends_adds_exactly_the_new_events(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, read_path: str
) -> None:
    first = append_shop(store_dsn, 800, seed=1)
    con = open_lake(lake_config)
    assert ingest(con, source, batch_size=300).events == first
    second = append_shop(store_dsn, 600, seed=2)
    assert ingest(con, source, batch_size=300).events == second
    assert lake_ids(con) == store_ids(store_dsn)


def test_events_of_an_open_transaction_wait_until_it_commits(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, read_path: str
) -> None:
    append_shop(store_dsn, 200)
    slow = connect(store_dsn)
    slow.execute(
        "INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, data) "
        "VALUES ('cart-slow', 'cart', 1, %s, 'CartOpened', '{}')",
        (str(uuid.uuid4()),),
    )  # position taken now, committed later
    with connect(store_dsn) as conn:
        append_streams(conn, [StreamAppend("cart-fast", "cart", [NewEvent("CartOpened", {})])])
        conn.commit()
    con = open_lake(lake_config)
    ingest(con, source)
    ids = lake_ids(con)
    assert len(ids) == len(store_ids(store_dsn)) - 1  # store_ids cannot see the open row either
    slow.commit()
    slow.close()
    ingest(con, source)
    assert lake_ids(con) == store_ids(store_dsn)
    assert con.execute("SELECT count(*) FROM raw.events WHERE stream_id IN ('cart-slow', 'cart-fast')").fetchone() == (
        2,
    )


@pytest.mark.parametrize("path", sorted(READ_PATHS))
def test_racing_ingests_never_land_an_event_twice(lake_config: LakeConfig, store_dsn: str, path: str) -> None:
    appended = append_shop(store_dsn, 3_000)
    open_lake(lake_config).close()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with NativeAdapter(store_dsn) as reader:
                reader._parallel_share = READ_PATHS[path]
                con = open_lake(lake_config)
                ingest(con, StoreSource(reader), batch_size=250)
                con.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    con = open_lake(lake_config)
    assert con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw.events").fetchone() == (appended, appended)
    assert lake_ids(con) == store_ids(store_dsn)


def test_compaction_merges_small_files_and_keeps_every_event(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_shop(store_dsn, 1_500)
    con = open_lake(lake_config)
    ingest(con, source, batch_size=100, compact_after=None)
    files = table_files(con)["raw.events"][0]
    # follow bounds each merge: files of `largest` bytes or more are left alone (here: every one of them).
    assert compact(con, largest=1) == (files, files)
    before, after = compact(con)
    assert before == files and after < before
    assert lake_ids(con) == store_ids(store_dsn)


def test_automatic_compaction_after_many_small_commits(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_shop(store_dsn, 1_500)
    con = open_lake(lake_config)
    result = ingest(con, source, batch_size=50, compact_after=20)  # 30 commits: 30 small files
    assert result.compacted
    assert lake_ids(con) == store_ids(store_dsn)


def test_a_lake_refuses_events_of_another_store(lake_config: LakeConfig, source: StoreSource, store_dsn: str) -> None:
    append_shop(store_dsn, 100)
    con = open_lake(lake_config)
    ingest(con, source)
    with connect(store_dsn) as conn:
        conn.execute("CREATE SCHEMA other; CREATE TABLE other.events (LIKE public.events INCLUDING ALL)")
    with (
        NativeAdapter(store_dsn, "other", "events") as reader,
        pytest.raises(LakeConfigurationError, match=r"holds the events of native:public\.events"),
    ):
        ingest(con, StoreSource(reader))


def test_sqlite_catalog_works_for_a_single_writer(source: StoreSource, store_dsn: str, tmp_path: Path) -> None:
    appended = append_shop(store_dsn, 300)
    config = LakeConfig("sqlite", str(tmp_path / "lake.sqlite"), str(tmp_path / "data") + "/")
    con = open_lake(config)
    assert ingest(con, source, batch_size=100).events == appended
    con.close()
    reader = open_lake(config, read_only=True)
    assert reader.execute("SELECT count(*) FROM raw.all_events").fetchone() == (appended,)


def _late_around(store_dsn: str, carts: int) -> int:
    """One event whose transaction takes its position first and commits after ``carts`` carts of 4 events each;
    returns the carts' events."""
    late = connect(store_dsn)
    late.execute(
        "INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, data) "
        "VALUES ('cart-late', 'cart', 1, %s, 'CartOpened', '{}')",
        (str(uuid.uuid4()),),
    )
    with connect(store_dsn) as conn:  # (append_shop would wait: its CREATE INDEX IF NOT EXISTS locks the table)
        streams = [
            StreamAppend(f"cart-{n}", "cart", [NewEvent("ItemAdded", {"n": k}) for k in range(4)]) for n in range(carts)
        ]
        append_streams(conn, streams)
        conn.commit()
    late.commit()
    late.close()
    return 4 * carts


def test_the_parallel_scan_reads_a_batch_only_when_it_is_a_large_share_of_the_table(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    """Each batch of a quarter of the table or more scans it, a smaller one reads the index; the event of a
    transaction that commits after later positions lands where the index puts it."""
    first = append_shop(store_dsn, 1_600, transactions=12)
    second = _late_around(store_dsn, carts=100)
    con = open_lake(lake_config)
    result = ingest(con, source, batch_size=600)
    # Three batches of 600 scan the table of 2,001 events; the fourth, of 201 events, reads the index.
    assert (result.events, result.batches, result.scanned) == (first + second + 1, 4, 3)
    assert lake_ids(con) == store_ids(store_dsn)
    with connect(store_dsn) as conn:
        append_streams(conn, [StreamAppend("cart-small", "cart", [NewEvent("CartOpened", {"n": 1})])])
        conn.commit()
    small = ingest(con, source, batch_size=600)
    assert (small.events, small.scanned) == (1, 0)  # 1 event of ~2,000: through the index
    assert lake_ids(con) == store_ids(store_dsn)


def test_a_batch_that_can_hold_the_whole_table_scans_it_without_counting_its_extent(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    """A first ingest, or a catch-up from far behind, whose batch can hold every event of the table takes all that
    settled after the checkpoint from the scan, with no extent read first: the same events as the index, the
    event of a transaction that committed after later positions among them."""
    from eventstore.positions import START

    append_shop(store_dsn, 1_200, transactions=8)
    _late_around(store_dsn, carts=200)
    con = open_lake(lake_config)
    head = source.head(START)
    source.attach(con)
    assert (planned := source.parallel_batch(con, START, head.bound, 10_000)) is not None and planned.events is None
    counted = source.parallel_batch(con, START, head.bound, 1_000)  # a batch smaller than the table: counted
    assert counted is not None and counted.events == 1_000
    first = ingest(con, source, batch_size=700, max_batches=1)  # through the extent: 700 of ~2,000
    rest = ingest(con, source, batch_size=10_000)  # every event left, from the scan alone
    assert (first.scanned, rest.scanned, rest.batches) == (1, 1, 1)
    assert first.events + rest.events == len(store_ids(store_dsn))
    assert lake_ids(con) == store_ids(store_dsn)
    # Nothing settled after the checkpoint: the scan finds nothing and the ingest commits nothing.
    assert ingest(con, source, batch_size=10_000).batches == 0


def test_a_staged_batch_holds_exactly_the_rows_that_landed(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, read_path: str
) -> None:
    """ingest(stage=True) keeps the last batch in a temporary table (follow's cycle reads it instead of the lake)."""
    from eventstore.positions import in_range
    from warehouse.ingest import drop_staged

    append_shop(store_dsn, 500)
    con = open_lake(lake_config)
    first = ingest(con, source, stage=True)
    assert first.staged is not None and first.staged.table is not None
    assert (first.staged.events, first.staged.until) == (first.events, first.checkpoint)
    appended = append_shop(store_dsn, 1_000, seed=9)
    second = ingest(con, source, stage=True, batch_size=400)
    staged = second.staged
    batches = -(-appended // 400)
    assert staged is not None and staged.table is not None and second.batches == batches > 1
    # The last batch's rows, column for column (ingested_at too: the lake got the staged rows).
    assert staged.after != first.checkpoint and staged.until == second.checkpoint
    landed = f"SELECT * FROM raw.events WHERE {in_range(staged.after, staged.until)}"
    kept = f"SELECT * FROM temp.main.{staged.table}"
    for a, b in ((landed, kept), (kept, landed)):
        assert con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchone() == (0,)
    assert (
        con.execute(f"SELECT count(*) FROM ({kept})").fetchone()
        == (staged.events,)
        == (appended - 400 * (batches - 1),)
    )
    assert ingest(con, source, stage=True).staged is None  # nothing new: nothing staged
    drop_staged(con, first.staged)
    drop_staged(con, staged)
    assert not con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    assert ingest(con, source).staged is None and lake_ids(con) == store_ids(store_dsn)


def test_a_start_another_ingest_overtook_lands_nothing_twice(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    """follow starts a cycle from what it last knew (start=); another writer may have moved the lake since."""
    append_shop(store_dsn, 300)
    con, other = open_lake(lake_config), open_lake(lake_config)
    known = ingest(con, source).checkpoint
    append_shop(store_dsn, 300, seed=3)
    head = source.head(known)
    overtaken = ingest(other, source).checkpoint  # another process lands the new events first
    result = ingest(con, source, start=(known, head))  # the batch finds the checkpoint moved and reads it
    assert (result.events, result.checkpoint) == (0, overtaken)
    append_shop(store_dsn, 200, seed=4)
    ingest(other, source)
    appended = append_shop(store_dsn, 100, seed=5)
    result = ingest(con, source, start=(overtaken, source.head(overtaken)))
    assert result.events == appended and result.checkpoint == lake_checkpoint(con)[0]
    assert lake_ids(con) == store_ids(store_dsn)
    other.close()


def test_columns_an_earlier_run_found_are_not_described_again(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """follow hands each cycle the optional columns its first ingest found: no DESCRIBE round trip to the store."""
    import warehouse.ingest as module

    append_shop(store_dsn, 100)
    con = open_lake(lake_config)
    first = ingest(con, source)
    assert first.columns == frozenset({"is_archived", "tenant_id", "correlation_id", "causation_id"})
    assert ingest(con, source).columns is None  # nothing new: nothing read, nothing described

    def refused(*_: object) -> set[str]:
        raise AssertionError("described again")

    monkeypatch.setattr(module, "optional_columns", refused)
    append_shop(store_dsn, 100, seed=2)
    again = ingest(con, source, columns=first.columns)
    assert again.events > 0 and again.columns == first.columns
    assert lake_ids(con) == store_ids(store_dsn)
    assert con.execute(
        "SELECT count(*) FROM raw.events WHERE correlation_id IS NULL AND metadata->>'correlation_id' IS NOT NULL"
    ).fetchone() == (0,)
