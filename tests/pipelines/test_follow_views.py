"""`follow` gives analysts a typed view of an event type (or version) the moment it first lands,
without rescanning the lake on cycles that bring none."""

from __future__ import annotations

from pathlib import Path

from eventstore.connection import connect
from eventstore.native_store import NewEvent, append
from eventstore.settings import Settings
from pipelines.follow import Follower
from projections import discover
from tests.warehouse.conftest import append_shop


def views(follower: Follower) -> set[str]:
    assert follower.lake is not None
    rows = follower.lake.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = 'lake' AND schema_name = 'analytics'"
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_a_new_event_type_gets_its_view_in_the_same_cycle(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    settings = Settings(
        home=tmp_path, event_store_dsn=store_dsn, lake=lake_env["PROJECTIONIST_LAKE"],
        lake_data=lake_env["PROJECTIONIST_LAKE_DATA"], long_stream_days=7,
    )  # fmt: skip
    append_shop(store_dsn, 300)
    lines: list[str] = []
    follower = Follower(settings, discover(bundled=True, folder=None), log=lines.append, warn=lines.append)
    try:
        follower.cycle()
        assert "events_item_added_v1" in views(follower)  # the first cycle types what it lands
        assert follower.lake is not None
        (comment,) = follower.lake.execute(
            "SELECT comment FROM duckdb_views() WHERE database_name = 'lake' AND view_name = 'stream_stats'"
        ).fetchone() or (None,)
        assert "long_stream_days=7" in str(comment)  # the settings `ingest` uses: the two never rewrite it in turn
        lines.clear()
        with connect(store_dsn) as conn:
            append(conn, "loyalty-1", "Loyalty", [NewEvent("PointsGranted", {"points": 40, "reason": "welcome"})])
            conn.commit()
        follower.cycle()
        assert "events_points_granted_v1" in views(follower)
        assert any("new event types: PointsGranted v1" in line for line in lines), lines
        assert follower.lake is not None
        assert follower.lake.execute("SELECT points FROM analytics.events_points_granted_v1").fetchall() == [(40,)]
        lines.clear()
        append_shop(store_dsn, 100, seed=3)  # known types only: no view is rewritten
        follower.cycle()
        assert not any("new event types" in line for line in lines), lines
    finally:
        follower.close()
