"""`follow` and the feed consumers: a pass after each cycle, and a consumer added while it runs."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from pipelines.follow import Follower
from tests.pipelines.conftest import carts_only, follow_settings
from tests.warehouse.conftest import append_shop
from warehouse.feeds import Consumer, add_consumer
from warehouse.lake import LakeConfig, open_lake


def test_a_consumer_added_while_follow_runs_gets_every_row_within_lake_every_cycles(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    settings = follow_settings(store_dsn, tmp_path, lake_env)
    lines: list[str] = []
    follower = Follower(settings, carts_only(), log=lines.append, warn=lines.append, lake_every=3)
    drop = tmp_path / "drop"
    try:
        append_shop(store_dsn, 60)
        follower.cycle()  # builds cart_summary; no consumer yet: the next cycles do not look for one
        assert follower.delivered == [] and not follower.feeds
        con = open_lake(LakeConfig.from_settings(settings))
        add_consumer(con, Consumer("drop", "parquet", "cart_summary", str(drop)))
        con.close()
        sent = []
        for seed in range(2, 5):  # within lake_every cycles that ingest, the consumer's first pass
            append_shop(store_dsn, 20, seed=seed)
            follower.cycle()
            sent += follower.delivered
        assert sent and follower.feeds
        files = sorted((drop / "drop").glob("*.parquet"))
        keys = {row["key"] for file in files for row in pq.read_table(file).to_pylist()}
        con = open_lake(LakeConfig.from_settings(settings), read_only=True)
        assert len(keys) == con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone()[0]
        con.close()
        assert any("delivered" in line and "drop" in line for line in lines)
    finally:
        follower.close()
