"""`follow` keeps the tables its cycles change cheap to read: one of them tidied every few cycles, in turn,
in its second lane (and raw.events compacted there), so that no cycle waits for it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from eventstore.settings import Settings
from pipelines.follow import TIDY_META, Follower
from projections import discover
from tests.warehouse.conftest import append_shop


def test_follow_tidies_its_tables_in_turn_and_a_failure_is_one_line(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.follow

    tidied: list[tuple[str, str]] = []
    real = pipelines.follow.tidy_table

    def recording(
        con: duckdb.DuckDBPyConnection, schema: str, table: str, threshold: float, *, largest: int | None = None
    ) -> tuple[int, int]:
        tidied.append((schema, table))
        assert largest == pipelines.follow.MERGE_BELOW  # each merge of a cycle's housekeeping is bounded
        return real(con, schema, table, threshold, largest=largest)

    monkeypatch.setattr(pipelines.follow, "tidy_table", recording)
    settings = Settings(
        home=tmp_path, event_store_dsn=store_dsn, lake=lake_env["PROJECTIONIST_LAKE"],
        lake_data=lake_env["PROJECTIONIST_LAKE_DATA"],
    )  # fmt: skip
    registry = discover(bundled=True, folder=None)
    lines: list[str] = []
    follower = Follower(settings, registry, log=lambda _: None, warn=lines.append, lake_every=2)
    try:
        append_shop(store_dsn, 200)
        follower.cycle()  # builds the versions: cart_summary here, the wide ones in the second lane
        assert follower.wide is not None and follower.wide.settle()  # their tables are in the turns from now on
        follower.written.add("gone_v9")  # a version dropped since it was advanced: its turn fails
        turns = len(TIDY_META) + len(follower.written) + 2  # and the wide lane's daily_revenue, product_sales
        for seed in range(2 * turns + 2):
            append_shop(store_dsn, 40, seed=seed + 10, transactions=2)
            follower.cycle()
        lane = follower.wide
        assert lane is not None and lane.settle()  # the tidying runs in the second lane, off the cycle's path
        assert follower.tidied == follower.turns >= turns and follower.outage_since is None
        assert [line for line in lines if "tidying" in line] == [
            next(line for line in lines if "tidying projections.gone_v9 failed" in line)
        ], lines  # once, however many turns it had
        # Every table the cycles change had its turn: the meta tables, then every projection table of both lanes.
        expected = {("meta", t) for t in TIDY_META} | {
            ("projections", t) for t in ("cart_summary_v2", "daily_revenue_v1", "product_sales_v1", "gone_v9")
        }
        assert set(tidied) == expected
        con = follower.lake
        assert con is not None
        followed = con.execute("SELECT * FROM projections.cart_summary_v2 ORDER BY ALL").fetchall()
    finally:
        follower.close()
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.versions import rebuild

    con = open_lake(LakeConfig.from_settings(settings))
    rebuild(con, registry, "cart_summary", 2)
    assert con.execute("SELECT * FROM projections.cart_summary_v2 ORDER BY ALL").fetchall() == followed
    con.close()
