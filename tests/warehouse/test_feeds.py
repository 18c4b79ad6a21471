"""Change feeds on a real lake: DuckLake's change feed narrowed to content changes, rebuilds, promotions, outbox."""

from __future__ import annotations

import dataclasses
import json

import psycopg
import pytest

from projections import Registry, discover
from tests.warehouse.conftest import append_shop, with_projection
from warehouse.diff import compare_versions
from warehouse.feeds import (
    Consumer,
    FeedError,
    add_consumer,
    changes,
    current_snapshot,
    deliver,
    ensure_outbox,
    get_consumer,
    remove_consumer,
)
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import project, promote, rebuild


@pytest.fixture(scope="module")
def registry() -> Registry:
    """The bundled projections, cart_summary v2's customer_id declared private (left out of the live view)."""
    bundled = discover(bundled=True, folder=None)
    columns = tuple(
        dataclasses.replace(c, public=False) if c.name == "customer_id" else c
        for c in bundled.get("cart_summary", 2).columns
    )
    return with_projection(bundled, "cart_summary", 2, columns=columns)


def outbox_rows(dsn: str, consumer: str) -> list[tuple[str, str, dict[str, object], str]]:
    with psycopg.connect(dsn) as pg:
        rows = pg.execute(
            "SELECT idempotency_key, op, key, to_snapshot::text FROM projectionist.outbox WHERE consumer = %s "
            "ORDER BY position",
            [consumer],
        ).fetchall()
    return [(str(r[0]), str(r[1]), r[2], str(r[3])) for r in rows]


def test_change_feed_and_outbox_through_project_rebuild_and_promotion(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, fresh_database: str, registry: Registry
) -> None:
    append_shop(store_dsn, 600, seed=1)
    con = open_lake(lake_config)
    ingest(con, source)
    project(con, registry, names=["cart_summary"])  # v2 is the registry's highest: first build is live
    start = current_snapshot(con)
    first = changes(con, registry, "cart_summary", 0, consumer="c")
    rows = con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone()
    assert rows and first.counts() == {"insert": rows[0], "update": 0, "delete": 0}
    assert first.to_version == 2 and first.checkpoint.global_position > 0
    message = json.loads(first.changes[0].row or "{}")
    assert "cart_id" in message and "total_amount" in message and "last_global_position" not in message
    assert "customer_id" not in message, "a private column never leaves"

    # The outbox consumer in a second database: the first pass has every row.
    ensure_outbox(fresh_database, "shop-outbox", "cart_summary")
    add_consumer(con, Consumer("shop-outbox", "outbox", "cart_summary", fresh_database))
    [result] = deliver(con, registry, "shop-outbox")
    assert result.changes == rows[0]
    assert len(outbox_rows(fresh_database, "shop-outbox")) == rows[0]

    # New events: DuckLake's feed names the touched keys; only those whose content changed are sent.
    before = {json.loads(c.key)["cart_id"]: c.content_hash for c in first.changes}
    append_shop(store_dsn, 200, seed=2, transactions=2)
    ingest(con, source)
    project(con, registry, names=["cart_summary"])
    cursor = get_consumer(con, "shop-outbox").snapshot  # what the next pass reads from (keys include it)
    later = changes(con, registry, "cart_summary", cursor, consumer="shop-outbox")
    assert not later.whole and later.changes
    now = dict(con.execute("SELECT cart_id, total_amount FROM analytics.cart_summary").fetchall())
    for change in later.changes:
        cart = json.loads(change.key)["cart_id"]
        assert change.previous_hash == before.get(cart) and change.content_hash != change.previous_hash
        assert change.op == ("insert" if cart not in before else "update")
        assert json.loads(change.row or "{}")["cart_id"] == cart and cart in now
    [result] = deliver(con, registry, "shop-outbox")
    assert result.counts == later.counts()
    sent = outbox_rows(fresh_database, "shop-outbox")
    assert [s[0] for s in sent[-len(later.changes) :]] == [c.idempotency_key for c in later.changes]

    # A rebuild of the live version with unchanged logic sends nothing, and neither does a pass with nothing new.
    rebuild(con, registry, "cart_summary", 2)
    assert changes(con, registry, "cart_summary", start, consumer="c").whole
    [result] = deliver(con, registry, "shop-outbox")
    assert result.changes == 0 and len(outbox_rows(fresh_database, "shop-outbox")) == len(sent)

    # A promotion (here back to v1, built beside) sends exactly the rows the diff finds changed.
    rebuild(con, registry, "cart_summary", 1)
    comparison, _ = compare_versions(con, registry, "cart_summary", 2, 1)
    promote(con, registry, "cart_summary", 1)
    [result] = deliver(con, registry, "shop-outbox")
    counts = comparison.counts()
    assert result.counts == {"insert": counts["only_in_b"], "update": counts["changed"], "delete": counts["only_in_a"]}
    assert result.counts["update"] > 0
    switched = outbox_rows(fresh_database, "shop-outbox")[len(sent) :]
    assert {s[3] for s in switched} == {str(result.to_snapshot)}, "one consistent switch"

    with pytest.raises(FeedError, match="unknown feed consumer 'shop-outbx' \\(did you mean 'shop-outbox'"):
        deliver(con, registry, "shop-outbx")
    # Removed and added again on the same target, it keeps the target's cursor (the authority), not the beginning.
    remove_consumer(con, "shop-outbox")
    assert ensure_outbox(fresh_database, "shop-outbox", "cart_summary") == result.to_snapshot
    con.close()


def test_a_row_changing_back_and_forth_gets_a_new_key_each_time(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    """A→B, B→A, A→B: three changes, three idempotency keys (a receiver dropping repeated keys keeps B)."""
    append_shop(store_dsn, 100, seed=3)
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        project(con, registry, names=["cart_summary"])
        cart, status = con.execute("SELECT cart_id, status FROM projections.cart_summary_v2 LIMIT 1").fetchone()
        cursor = current_snapshot(con)
        keys = []
        for value in ("zz-b", status, "zz-b"):
            con.execute("UPDATE projections.cart_summary_v2 SET status = ? WHERE cart_id = ?", [value, cart])
            [change] = changes(con, registry, "cart_summary", cursor, consumer="c").changes
            keys.append(change.idempotency_key)
            cursor = current_snapshot(con)
        assert len(set(keys)) == 3
        # A retry of the same pass (the cursor did not move) gets the same key.
        con.execute("UPDATE projections.cart_summary_v2 SET status = ? WHERE cart_id = ?", [status, cart])
        again = [changes(con, registry, "cart_summary", cursor, consumer="c").changes[0].idempotency_key for _ in "ab"]
        assert again[0] == again[1]
    finally:
        con.close()
