"""Progress by events: a bar moves inside a single chunk, as DuckDB scans, and only forward."""

from __future__ import annotations

import duckdb
import pytest

from projections import discover
from tests.warehouse.conftest import append_shop
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.progress import EventProgress, every
from warehouse.sources import StoreSource
from warehouse.versions import rebuild

SETTINGS = "SELECT current_setting('enable_progress_bar'), current_setting('enable_progress_bar_print')"
SLOW = "SELECT s, count(*) FROM t GROUP BY s ORDER BY s DESC LIMIT 3"  # a scan of 3 M rows: about 0.5 s


def test_the_events_of_a_running_statement_are_reported_before_it_commits() -> None:
    con = duckdb.connect()
    before = con.execute(SETTINGS).fetchone()  # DuckDB's defaults differ with the terminal: compare, not assume
    con.execute("CREATE TABLE t AS SELECT i, i::VARCHAR AS s FROM range(3000000) r(i)")
    calls: list[int] = []
    with EventProgress(con, calls.append) as watch:
        watch.begin(1_000)
        # However fast the machine, a poll lands inside one of these statements sooner or later.
        for _ in range(50):
            con.execute(SLOW).fetchall()
            if calls:
                break
        during = list(calls)
        watch.commit(1_000)
    assert during and 0 < sum(during) < 1_000  # part of the chunk, never its end before the commit
    assert all(n > 0 for n in calls) and sum(calls) == 1_000  # forward only, and all of it at the commit
    # The connection's own settings are back as they were: no progress bar printed by later statements.
    assert con.execute(SETTINGS).fetchone() == before


def test_no_callback_no_thread_and_no_setting_changed() -> None:
    con = duckdb.connect()
    before = con.execute(SETTINGS).fetchone()
    with EventProgress(con, None) as watch:
        watch.begin(10)
        assert con.execute(SETTINGS).fetchone() == before
        watch.commit(10)


@pytest.mark.parametrize("version", [1, 2])  # SQL and fold bodies
def test_a_rebuild_reports_every_event_once_and_per_chunk_commits_unchanged(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, version: int
) -> None:
    append_shop(store_dsn, 2_000)
    con = open_lake(lake_config)
    ingest(con, source)
    registry = discover(bundled=True, folder=None)
    for chunk_events in (None, 400):
        done: list[int] = []
        commits: list[int] = []
        result = rebuild(
            con,
            registry,
            "cart_summary",
            version,
            progress=commits.append,
            events_done=done.append,
            chunk_events=chunk_events,
        )
        assert all(n > 0 for n in done) and sum(done) == result.events == sum(commits)
        assert len(commits) == result.chunks  # ``progress`` keeps its meaning: once per committed chunk
        if version == 2 and chunk_events is None:
            # A fold says what it went through: a rebuild of one chunk moves before its commit.
            assert len(done) >= 2 and done[0] < result.events, done


def test_a_log_line_gives_the_total_so_far_and_waits_its_interval() -> None:
    lines: list[int] = []
    each = every(0.0, lines.append)
    for n in (5, 7, 1):
        each(n)
    assert lines == [5, 12, 13]
    quiet: list[int] = []
    rare = every(3600.0, quiet.append)
    rare(10)
    assert quiet == []  # nothing before the first interval has passed
