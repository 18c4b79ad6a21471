"""`follow`'s wide lane: the versions whose keys gather many streams advance beside the cycle, not in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.connection import connect
from eventstore.errors import ProjectionistError
from eventstore.native_store import NewEvent, StreamAppend, append_streams
from eventstore.settings import Settings
from pipelines.follow import Follower
from pipelines.follow_lanes import wide_names
from projections import PoisonPolicy, discover
from tests.warehouse.conftest import append_shop, with_projection
from warehouse.ingest import lake_checkpoint
from warehouse.versions import list_versions


def _settings(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> Settings:
    return Settings(
        home=tmp_path, event_store_dsn=store_dsn, lake=lake_env["PROJECTIONIST_LAKE"],
        lake_data=lake_env["PROJECTIONIST_LAKE_DATA"],
    )  # fmt: skip


def test_the_wide_versions_advance_in_their_own_lane_and_are_caught_up_when_follow_stops(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    registry = discover(bundled=True, folder=None)
    assert wide_names(registry) == ["daily_revenue", "product_sales"]  # cart_summary is keyed by stream
    append_shop(store_dsn, 300)
    lines: list[str] = []
    follower = Follower(_settings(store_dsn, tmp_path, lake_env), registry, log=lines.append, warn=lines.append)
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

    con = open_lake(LakeConfig.from_settings(_settings(store_dsn, tmp_path, lake_env)), read_only=True)
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
    follower = Follower(_settings(store_dsn, tmp_path, lake_env), strict, log=lines.append, warn=lines.append)
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
        assert lane.error is not None and not lane.error.retryable
        with pytest.raises(ProjectionistError, match="product_sales"):
            follower.cycle()
    finally:
        follower.close()
