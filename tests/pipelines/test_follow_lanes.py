"""`follow`'s wide lane: the versions whose keys gather many streams advance beside the cycle, not in it."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from eventstore.connection import connect
from eventstore.errors import ProjectionistError
from eventstore.native_store import NewEvent, StreamAppend, append_streams
from pipelines.follow import Follower
from pipelines.follow_lanes import LANE_NICENESS, Turns, WideLane, _yield_cpu, wide_names
from projections import PoisonPolicy, discover
from tests.pipelines.conftest import follow_settings
from tests.warehouse.conftest import append_shop, with_projection
from warehouse.ingest import lake_checkpoint
from warehouse.lake import LakeConfig, open_lake
from warehouse.maintenance import tidy_table
from warehouse.versions import list_versions


def test_the_wide_versions_advance_in_their_own_lane_and_are_caught_up_when_follow_stops(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    registry = discover(bundled=True, folder=None)
    assert wide_names(registry) == ["daily_revenue", "product_sales"]  # cart_summary is keyed by stream
    append_shop(store_dsn, 300)
    lines: list[str] = []
    follower = Follower(follow_settings(store_dsn, tmp_path, lake_env), registry, log=lines.append, warn=lines.append)
    try:
        follower.cycle()
        append_shop(store_dsn, 200, seed=3)
        follower.cycle()
        cycle_lines = [line for line in lines if "ingested" in line]
        assert cycle_lines and not any("daily_revenue" in line for line in cycle_lines), lines
        lake = follower.lake
        assert lake is not None
        until = lake_checkpoint(lake)[0]
    finally:
        follower.close()  # drains: the pass the last cycle asked for is done before it returns
    assert any("projected daily_revenue v1" in line and "product_sales v1" in line for line in lines), lines
    from warehouse.lake import LakeConfig, open_lake

    con = open_lake(LakeConfig.from_settings(follow_settings(store_dsn, tmp_path, lake_env)), read_only=True)
    try:
        versions = {(v.name, v.state): v.checkpoint for v in list_versions(con)}
    finally:
        con.close()
    assert versions[("daily_revenue", "live")] == versions[("product_sales", "live")] == until
    assert versions[("cart_summary", "live")] == until


def test_a_terminal_failure_in_the_wide_lane_stops_follow_with_it(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    shop = discover(bundled=True, folder=None)
    strict = with_projection(shop, "product_sales", 1, poison=PoisonPolicy(live="stop", rebuild="stop"))
    append_shop(store_dsn, 100)
    lines: list[str] = []
    follower = Follower(follow_settings(store_dsn, tmp_path, lake_env), strict, log=lines.append, warn=lines.append)
    try:
        follower.cycle()
        lane = follower.wide
        assert lane is not None and lane.settle()  # its first pass (it builds product_sales) is over
        poison = {"product_id": "p1", "quantity": "lots", "unit_price": 2.5, "currency": "EUR"}
        cart = [NewEvent("ItemAdded", poison, 2), NewEvent("CartConfirmed", {})]
        with connect(store_dsn) as conn:
            append_streams(conn, [StreamAppend("cart-poison", "cart", cart)])
        follower.cycle()  # the cycle itself is fine (cart_summary skips it); the wide lane stops on it
        assert not lane.settle()  # over, but failed
        assert isinstance(lane.error, ProjectionistError) and not lane.error.retryable
        with pytest.raises(ProjectionistError, match="product_sales"):
            follower.cycle()
    finally:
        follower.close()


def test_a_bug_in_a_pass_of_the_wide_lane_stops_follow_as_one_in_the_cycle_would(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the lane's thread died on it: follow ran on with its wide projections stalled for good."""

    def broken(*args: object, **kwargs: object) -> None:
        raise TypeError("a bug in a pass")

    monkeypatch.setattr("pipelines.follow_lanes.project", broken)
    config = LakeConfig.from_settings(follow_settings(store_dsn, tmp_path, lake_env))
    lines: list[str] = []
    lane = WideLane(config, discover(bundled=True, folder=None), ["daily_revenue"], lines.append, lines.append)
    try:
        lane.kick()
        assert not lane.settle(10)  # over, but failed
        with pytest.raises(TypeError, match="a bug in a pass"):
            lane.raise_terminal()  # what the next cycle does: follow stops with the bug's traceback
    finally:
        lane.close()


def test_a_chore_that_fails_in_any_way_is_a_line_and_the_lane_goes_on(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    config = LakeConfig.from_settings(follow_settings(store_dsn, tmp_path, lake_env))
    lines: list[str] = []
    lane = WideLane(config, discover(bundled=True, folder=None), [], lines.append, lines.append)
    after = threading.Event()
    try:

        def broken(con: object) -> None:
            raise KeyError("no such table")

        lane.chore(broken)
        assert lane.settle(10)
        lane.chore(lambda con: after.set())
        assert lane.settle(10) and after.is_set()
        lane.raise_terminal()
    finally:
        lane.close()
    assert len(lines) == 1 and "housekeeping failed: KeyError('no such table')" in lines[0], lines


def test_housekeeping_waits_for_the_cycle_that_writes_the_table_it_rewrites(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    """A row the cycle replaces while the lane rewrites its file came back beside its new version (DuckLake 1.5)."""
    config = LakeConfig.from_settings(follow_settings(store_dsn, tmp_path, lake_env))
    cycle = open_lake(config)
    cycle.execute("CREATE TABLE meta.turns_probe (k INTEGER, v INTEGER)")
    cycle.execute("INSERT INTO meta.turns_probe VALUES (1, 0), (2, 0)")
    cycle.execute("CALL ducklake_flush_inlined_data('lake', schema_name => 'meta', table_name => 'turns_probe')")
    cycle.execute("UPDATE meta.turns_probe SET v = 1 WHERE k = 2")  # a deleted row: the tidy rewrites the file
    turns = Turns()
    lines: list[str] = []
    lane = WideLane(config, discover(bundled=True, folder=None), [], lines.append, lines.append, turns=turns)
    tidied = threading.Event()
    try:
        with turns.cycle():
            cycle.execute("BEGIN")
            cycle.execute("UPDATE meta.turns_probe SET v = v + 1 WHERE k = 1")
            appended_only = threading.Event()  # a chore on a table the cycle only appends to needs no turn
            lane.chore(lambda con: appended_only.set(), exclusive=False)
            lane.chore(lambda con: (tidy_table(con, "meta", "turns_probe"), tidied.set()))
            assert appended_only.wait(10)
            time.sleep(0.5)
            assert not tidied.is_set(), "the lane rewrote the table while the cycle's transaction was open"
            cycle.execute("COMMIT")
        assert lane.settle(30) and tidied.is_set()
        if sys.platform.startswith("linux"):  # the lane's thread runs below the cycle's priority
            mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
            assert lane._thread.native_id is not None
            assert os.getpriority(os.PRIO_PROCESS, lane._thread.native_id) == min(19, mine + LANE_NICENESS)
    finally:
        lane.close()
    assert lines == []
    assert cycle.execute("SELECT k, v FROM meta.turns_probe ORDER BY ALL").fetchall() == [(1, 1), (2, 1)]
    cycle.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a per-thread nice value is Linux's")
def test_the_lane_thread_yields_the_cpu_to_the_cycle_and_only_itself() -> None:
    """The lane's passes grow with the day: its thread runs at a lower priority, the process's others do not."""
    seen: dict[str, int] = {}
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def lane() -> None:
        assert _yield_cpu(LANE_NICENESS)
        seen["lane"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=lane)
    thread.start()
    thread.join()
    assert seen["lane"] == min(19, before + LANE_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the calling thread keeps its own
