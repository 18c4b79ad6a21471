"""The report's data model against a real demo lake: every number equals independent SQL over the lake."""

from __future__ import annotations

import duckdb

from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.native_store import NewEvent, append
from projections import discover
from tests.warehouse.conftest import append_shop
from warehouse.analytics import refresh_analytics
from warehouse.diff import compare_versions
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.report import build_report, empty_report
from warehouse.report_html import render_report
from warehouse.sources import StoreSource
from warehouse.versions import promote, rebuild

HOSTILE = "<script>alert('x')</script>&\"cart"
THRESHOLD = 9  # the demo's carts have at most 9 events: only the streams appended below are long


def rows(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple[object, ...]]:
    return con.execute(query).fetchall()


def test_the_report_of_a_demo_lake_equals_sql_over_the_lake(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_demo_shop(store_dsn, events=600, writers=2, seed=3)
    with connect(store_dsn) as conn:
        append(conn, HOSTILE, "cart", [NewEvent("ItemAdded", {"product_id": "p", "quantity": 1}) for _ in range(12)])
        append(conn, "cart-long", "cart", [NewEvent("CartOpened", {"customer_id": "c"}) for _ in range(10)])
    registry = discover(bundled=True, folder=None)
    con = open_lake(lake_config)
    try:
        first = ingest(con, source, batch_size=250)  # several commits in one run: the early ones lag its head
        refresh_analytics(con, long_stream_threshold=THRESHOLD)
        rebuild(con, registry, "cart_summary", 1)
        promote(con, registry, "cart_summary", 1)
        rebuild(con, registry, "cart_summary", 2)
        _, comparison_id = compare_versions(con, registry, "cart_summary", 1, 2, sample_size=1)
        promote(con, registry, "cart_summary", 2)
        append_shop(store_dsn, 100, seed=9, transactions=1)
        second = ingest(con, source)
        snapshot = rows(con, "SELECT id FROM ducklake_current_snapshot('lake')")
        assert ingest(con, source).events == 0  # nothing new: no meta.ingest_commits row, no snapshot
        assert rows(con, "SELECT id FROM ducklake_current_snapshot('lake')") == snapshot
    finally:
        con.close()
    assert first.batches >= 3 and second.batches == 1

    con = open_lake(lake_config, read_only=True)
    try:
        report = build_report(con, lake=lake_config.describe(), data_path=lake_config.data_path)

        # Volume per day and type, against raw.all_events directly.
        volume = {(r.day, r.event_type): r.events for r in report.volume}
        assert volume == dict(
            ((day, t), n)
            for day, t, n in rows(
                con, "SELECT recorded_at::DATE, event_type, count(*) FROM raw.all_events GROUP BY ALL"
            )
        )

        # Stream lengths: the histogram holds every stream; the long ones are named, longest first.
        streams = report.streams
        assert streams.threshold == THRESHOLD
        assert rows(con, "SELECT count(DISTINCT stream_id) FROM raw.all_events") == [(streams.streams,)]
        assert sum(s for _, _, s in streams.bins) == streams.streams
        by_length = dict(
            rows(
                con, "SELECT n, count(*) FROM (SELECT count(*) AS n FROM raw.all_events GROUP BY stream_id) GROUP BY n"
            )
        )
        assert {lo: s for lo, hi, s in streams.bins if lo == hi} == by_length
        long = rows(
            con,
            f"SELECT stream_id, count(*) AS n FROM raw.all_events GROUP BY stream_id HAVING n > {THRESHOLD} "
            "ORDER BY n DESC, stream_id",
        )
        assert [(s.stream_id, s.events) for s in streams.longest] == long == [(HOSTILE, 12), ("cart-long", 10)]
        assert streams.long_streams == 2

        # Lag: one row per commit; each commit's events are the rows it landed (ingested_at is its start).
        assert len(report.lag) == first.batches + second.batches
        for point in report.lag:
            landed = rows(con, f"SELECT count(*) FROM raw.all_events WHERE ingested_at = '{point.at.isoformat()}'")
            total = rows(con, f"SELECT count(*) FROM raw.all_events WHERE ingested_at <= '{point.at.isoformat()}'")
            head_tx, head_pos = map(int, point.head.split("/"))
            tx, pos = map(int, point.checkpoint.split("/"))
            behind = rows(
                con,
                f"SELECT count(*) FROM raw.all_events WHERE (transaction_id > {tx} OR (transaction_id = {tx} AND "
                f"global_position > {pos})) AND (transaction_id < {head_tx} OR (transaction_id = {head_tx} AND "
                f"global_position <= {head_pos}))",
            )
            assert (landed, total, behind) == ([(point.events,)], [(point.lake_events,)], [(point.lag_events,)])
        assert (report.lag[0].lag_events or 0) > 0 and report.lag[-1].lag_events == 0
        assert report.lag[-1].lake_events == rows(con, "SELECT count(*) FROM raw.all_events")[0][0]

        # Size: the current snapshot's files, as DuckLake lists them per table.
        listed = sum(
            int(size)
            for table in ("events",)
            for (size,) in rows(
                con, f"SELECT data_file_size_bytes FROM ducklake_list_files('lake', '{table}', schema => 'raw')"
            )
        )
        assert report.size.tables["raw.events"] == listed > 0
        assert report.size.live_bytes == sum(report.size.tables.values()) == report.size.growth[-1].bytes
        assert [p.snapshot for p in report.size.growth] == [
            int(r[0]) for r in rows(con, "SELECT snapshot_id FROM ducklake_snapshots('lake') ORDER BY 1")
        ]
        assert report.size.on_disk_bytes is not None and report.size.on_disk_bytes >= listed

        # Versions: v2 live, v1 the rollback target, the comparison recorded last.
        (summary,) = report.projections
        assert (summary.name, summary.live, summary.staged, summary.rollback_target) == ("cart_summary", 2, [], 1)
        assert summary.last_comparison is not None and summary.last_comparison.comparison_id == comparison_id
        counts = rows(
            con,
            "SELECT rows_only_in_a, rows_only_in_b, rows_changed, rows_identical FROM meta.comparisons "
            f"WHERE comparison_id = '{comparison_id}'",
        )
        assert counts == [
            tuple(summary.last_comparison.counts[k] for k in ("only_in_a", "only_in_b", "changed", "identical"))
        ]
        assert summary.last_comparison.verdict.startswith(("differs: ", "identical: "))
    finally:
        con.close()

    page = render_report(report)
    assert "<script" not in page and HOSTILE not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;cart" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page


def test_empty_parts_say_so(lake_config: LakeConfig) -> None:
    open_lake(lake_config).close()  # a new lake: created, nothing ingested
    con = open_lake(lake_config, read_only=True)
    try:
        report = build_report(con, lake=lake_config.describe(), data_path=lake_config.data_path)
    finally:
        con.close()
    assert (report.lag, report.volume, report.streams.bins, report.projections) == ([], [], [], [])
    assert report.size.live_bytes == 0 and report.created
    page = render_report(report)
    for words in (
        "No ingest commit recorded yet",
        "No events in the lake yet",
        "No streams in the lake yet",
        "No projection version built yet",
        "No data files yet",
    ):
        assert words in page
    assert "<svg" not in page
    never = render_report(empty_report("nowhere", "/nonexistent/"))
    assert "has not been created yet" in never and "<svg" not in never
