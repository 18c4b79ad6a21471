"""`follow` waits on the store: a commit wakes it when the store has the NOTIFY trigger (`init --notify`),
and without the trigger it still gets every event by polling. Its ingest commits carry the event catalog."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from click.testing import CliRunner

from eventstore.connection import connect
from eventstore.native_store import NewEvent, append
from pipelines.cli import cli
from pipelines.follow import Follower
from tests.pipelines.conftest import carts_only, follow_settings
from tests.warehouse.conftest import append_shop


def _append_cart(dsn: str) -> str:
    cart = f"cart-{uuid.uuid4()}"
    with connect(dsn) as conn:
        append(conn, cart, "cart", [NewEvent("CartOpened", {"customer_id": "c9"}), NewEvent("CartConfirmed", {})])
        conn.commit()
    return cart


def _status(follower: Follower, cart: str) -> str | None:
    assert follower.lake is not None
    row = follower.lake.execute("SELECT status FROM analytics.cart_summary WHERE cart_id = ?", [cart]).fetchone()
    return str(row[0]) if row else None


def test_follow_wakes_on_notify_and_polls_without_the_trigger(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    settings = follow_settings(store_dsn, tmp_path, lake_env)
    append_shop(store_dsn, 60)
    lines: list[str] = []
    follower = Follower(settings, carts_only(), lines.append, lines.append, interval=30)
    try:
        follower.cycle()
        assert follower.wait(0) is True  # its first LISTEN: it looks at the store at once

        # No trigger: no wake-up, the wait runs out (the poll), and the cycle after it still gets the event.
        polled = _append_cart(store_dsn)
        assert follower.wait(0.5) is False
        follower.cycle()
        assert _status(follower, polled) == "confirmed"

        # The store owner's choice: the trigger, through `init --notify`. Now a commit ends the 30 s wait.
        done = CliRunner().invoke(cli, ["init", "--notify"], env={"PROJECTIONIST_EVENT_STORE_DSN": store_dsn})
        assert done.exit_code == 0, done.output
        assert "NOTIFY channel projectionist_events" in done.output
        woken = _append_cart(store_dsn)
        assert follower.wait(60) is True  # woken by the commit's notification, long before the poll
        follower.cycle()
        assert _status(follower, woken) == "confirmed"

        # In an outage the backoff rules: a commit does not cut it short (it would repeat the failing cycle),
        # and the notification is still there once the outage is over.
        follower.outage_since = time.monotonic()
        later = _append_cart(store_dsn)
        assert follower.wait(0.3) is False
        follower.outage_since = None
        assert follower.wait(60) is True
        follower.cycle()
        assert _status(follower, later) == "confirmed"

        assert follower.lake is not None
        lake = follower.lake
        # The catalog rode in the ingest commits: it covers exactly what raw.events holds, with no commit of its own.
        catalog = lake.execute(
            "SELECT event_type, event_version, events FROM analytics.event_catalog ORDER BY ALL"
        ).fetchall()
        counted = lake.execute(
            "SELECT event_type, event_version, count(*) FROM raw.events GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        assert catalog == counted
        positions = lake.execute(
            "SELECT list(transaction_id ORDER BY consumer), list(global_position ORDER BY consumer) "
            "FROM meta.checkpoints WHERE consumer IN ('ingest', 'event_catalog')"
        ).fetchone()
        assert positions is not None and len(set(positions[0])) == 1 and len(set(positions[1])) == 1
        catalog_commits = lake.execute(
            "SELECT list(coalesce(commit_message, '') ORDER BY snapshot_id) FROM ducklake_snapshots('lake') "
            "WHERE list_contains(flatten([coalesce(changes['inlined_insert'], []), "
            "coalesce(changes['tables_inserted_into'], [])]), (SELECT table_id::VARCHAR "
            "FROM ducklake_table_info('lake') WHERE table_name = 'event_catalog_types'))"
        ).fetchone()
        assert catalog_commits is not None and len(catalog_commits[0]) == 4, catalog_commits  # one per cycle
        assert all(m.startswith("ingest native:public.events") for m in catalog_commits[0]), catalog_commits
    finally:
        follower.close()
