"""Peers (issue 7): catching up cart totals over an ``eventsourcing`` application's events.

The demo shop is written through the ``eventsourcing`` library's own ``Application`` (``Shop``,
PostgreSQL persistence, table ``shop_events``; not timed). Then, in the same run, over the same
table, from nothing to every cart's totals:

- ``eventsourcing``: the library's own projection machinery (``eventsourcing.projection``):
  a ``ProjectionRunner`` subscribes to the application, a ``Projection`` folds each domain event
  into a PostgreSQL materialised view (``PostgresTrackingRecorder`` subclass: table
  ``cart_totals`` plus the library's tracking row, one transaction per event — how the library
  makes a view exactly-once) until the view has tracked the last notification id;
- ``eventsourcing-memory``: the same runner and projection with the view kept in a Python dict
  (the library's ``POPOTrackingRecorder``): no durability, the library's processing ceiling;
- ``projectionist``: ``ingest`` through the ``eventsourcing`` adapter into a fresh lake
  (checkpointed DuckLake commits) plus ``projections.compute`` of ``cart_summary`` v1 over
  ``raw.all_events``.

All three produce the same per-cart item quantity and total (checked here). Prints each time
and the ratio. Run (about 2 minutes of writing per 100,000 events first):

    uv run python benchmarks/peers.py --events 100000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from threading import Lock
from typing import Any

from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.persistence import Tracking
from eventsourcing.popo import POPOTrackingRecorder
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.projection import Projection, ProjectionRunner
from psycopg.sql import SQL

from eventstore.adapters import EventsourcingAdapter
from eventstore.adapters.eventsourcing_shop import Cart, Shop, append_demo_shop_eventsourcing, postgres_env
from eventstore.connection import EmbeddedServer, connect, ensure_database
from eventstore.duckdb_connections import new_connection
from projections import compute, discover
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource

CENT = Decimal("0.01")


class PostgresCartTotals(PostgresTrackingRecorder):
    """A materialised view of cart totals in PostgreSQL, updated with the tracking row in one transaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS cart_totals (cart_id uuid PRIMARY KEY, status text, "
                "item_quantity bigint NOT NULL DEFAULT 0, total_amount numeric(18, 2) NOT NULL DEFAULT 0)"
            )
        )

    def apply(self, cart_id: uuid.UUID, status: str | None, quantity: int, amount: Decimal, tracking: Tracking) -> None:
        """Fold one event into its cart's row and track it, atomically."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "INSERT INTO cart_totals AS t (cart_id, status, item_quantity, total_amount) "
                "VALUES (%s, coalesce(%s, 'open'), %s, %s) ON CONFLICT (cart_id) DO UPDATE SET "
                "status = coalesce(%s, t.status), item_quantity = t.item_quantity + %s, "
                "total_amount = t.total_amount + %s",
                (cart_id, status, quantity, amount, status, quantity, amount),
                prepare=True,
            )
            self._insert_tracking(curs, tracking)

    def totals(self) -> dict[str, tuple[int, Decimal]]:
        """cart id → (item quantity, total amount)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute("SELECT cart_id, item_quantity, total_amount FROM cart_totals")
            rows = curs.fetchall()
        return {str(r["cart_id"]): (int(r["item_quantity"]), Decimal(r["total_amount"])) for r in rows}


class MemoryCartTotals(POPOTrackingRecorder):
    """The same view in a dict (the library's in-memory tracking recorder)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: dict[str, list[Any]] = {}
        self.lock = Lock()

    def apply(self, cart_id: uuid.UUID, status: str | None, quantity: int, amount: Decimal, tracking: Tracking) -> None:
        """Fold one event into its cart's row and track it."""
        with self.lock:
            row = self.rows.setdefault(str(cart_id), ["open", 0, Decimal(0)])
            if status is not None:
                row[0] = status
            row[1] += quantity
            row[2] += amount
            self.insert_tracking(tracking)

    def totals(self) -> dict[str, tuple[int, Decimal]]:
        """cart id → (item quantity, total amount)."""
        return {k: (int(v[1]), v[2]) for k, v in self.rows.items()}


class CartTotals(Projection[Any]):
    """cart_summary's quantity and total as an ``eventsourcing`` projection (one call per event)."""

    name = "carttotals"

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        """Events of other types only move the tracking position."""
        self.view.insert_tracking(tracking)

    @process_event.register
    def _(self, domain_event: Cart.CartOpened, tracking: Tracking) -> None:
        self.view.apply(domain_event.originator_id, "open", 0, Decimal(0), tracking)

    @process_event.register
    def _(self, domain_event: Cart.ItemAdded, tracking: Tracking) -> None:
        price = Decimal(str(domain_event.unit_price)).quantize(CENT)
        self.view.apply(
            domain_event.originator_id, None, domain_event.quantity, domain_event.quantity * price, tracking
        )

    @process_event.register
    def _(self, domain_event: Cart.ItemRemoved, tracking: Tracking) -> None:
        price = Decimal(str(domain_event.unit_price)).quantize(CENT)
        self.view.apply(
            domain_event.originator_id, None, -domain_event.quantity, -domain_event.quantity * price, tracking
        )

    @process_event.register
    def _(self, domain_event: Cart.CartConfirmed, tracking: Tracking) -> None:
        self.view.apply(domain_event.originator_id, "confirmed", 0, Decimal(0), tracking)

    @process_event.register
    def _(self, domain_event: Cart.CartCancelled, tracking: Tracking) -> None:
        self.view.apply(domain_event.originator_id, "cancelled", 0, Decimal(0), tracking)


def run_library(dsn: str, view_dsn: str, view: type[Any], last: int) -> tuple[float, dict[str, tuple[int, Decimal]]]:
    """Time the library's runner from start until its view has tracked notification ``last``."""
    env = postgres_env(dsn)
    view_env = postgres_env(view_dsn)
    if view is MemoryCartTotals:
        view_env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    env.update({f"CARTTOTALS_{k}": v for k, v in view_env.items()})
    started = time.perf_counter()
    with ProjectionRunner(application_class=Shop, projection_class=CartTotals, view_class=view, env=env) as runner:
        runner.wait(last, timeout=3600)
        seconds = time.perf_counter() - started
        totals = runner.view.totals()
    return seconds, totals


def run_projectionist(dsn: str, lake_dsn: str, data: Path) -> tuple[float, int, dict[str, tuple[int, Decimal]]]:
    """Time ingest (fresh lake) plus cart_summary v1 over raw.all_events."""
    registry = discover()
    # Process start-up, paid once per process and so not part of a catch-up (the library's
    # imports are not timed either): DuckDB checks the signatures of the two extensions it loads
    # (about 0.2 s for their 78 MB), and its Python client imports pandas, when installed, on
    # the first query with parameters. Printed, so the reader can add it back.
    warm_started = time.perf_counter()
    warm = new_connection("postgres", "ducklake")
    warm.execute("SELECT ?", [1]).fetchall()
    warm.close()
    print(f"  process warm-up (not timed): {time.perf_counter() - warm_started:.2f} s")
    started = time.perf_counter()
    source = StoreSource(EventsourcingAdapter(dsn, "public", "shop_events"))
    con = open_lake(LakeConfig("postgres", lake_dsn, str(data) + "/"))
    try:
        landed = ingest(con, source).events
        ingested = time.perf_counter() - started
        rows = compute(con, registry.get("cart_summary", 1), "raw.all_events", upcasters=registry.upcasters).rows
        seconds = time.perf_counter() - started
        print(f"  ingest {ingested:.2f} s, cart_summary v1 {seconds - ingested:.2f} s")
    finally:
        con.close()
        source.close()
    totals = {
        str(c): (int(q), Decimal(t))
        for c, q, t in zip(
            rows.column("cart_id").to_pylist(),
            rows.column("item_quantity").to_pylist(),
            rows.column("total_amount").to_pylist(),
            strict=True,
        )
    }
    return seconds, landed, totals


def main() -> None:
    """Write the shop once, then time each catch-up over it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--home", type=Path, help="data root (default: a temporary directory, removed after)")
    parser.add_argument("--skip-memory", action="store_true", help="do not run the in-memory library view")
    parser.add_argument(
        "--keep-store", action="store_true", help="keep the written store (database peers_store_<events>) and reuse it"
    )
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="peers-"))
    server = EmbeddedServer(home)
    tag = uuid.uuid4().hex[:8]
    store_name = f"peers_store_{args.events}"
    names = [f"peers_{tag}_{n}" for n in ("view", "lake")]
    try:
        server_dsn = server.start()
        with connect(server_dsn, autocommit=True) as conn:
            kept = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (store_name,)).fetchone()
        dsn = ensure_database(server_dsn, store_name)
        view_dsn, lake_dsn = (ensure_database(server_dsn, n) for n in names)
        if not (kept and args.keep_store):
            written = append_demo_shop_eventsourcing(dsn, events=args.events, seed=7, writers=2)
            print(f"wrote the shop through eventsourcing.Application ({written.seconds:.1f} s, not timed)")
        if not args.keep_store:
            names.append(store_name)
        with connect(dsn) as conn:
            row = conn.execute(
                "SELECT max(notification_id), count(*), count(DISTINCT originator_id) FROM shop_events"
            ).fetchone()
        assert row is not None
        last, events = int(row[0]), int(row[1])
        print(f"{events:,} events in {int(row[2]):,} carts in {store_name}.shop_events", flush=True)
        results: dict[str, float] = {}
        seconds, landed, ours = run_projectionist(dsn, lake_dsn, home / "lake-data")
        assert landed == events
        results["projectionist (ingest + cart_summary v1)"] = seconds
        print(f"projectionist: {seconds:.2f} s ({events / seconds:,.0f} events/s)", flush=True)
        if not args.skip_memory:
            seconds, theirs = run_library(dsn, view_dsn, MemoryCartTotals, last)
            assert theirs == ours, "in-memory view differs from cart_summary"
            results["eventsourcing ProjectionRunner, in-memory view"] = seconds
            print(f"eventsourcing (in-memory view): {seconds:.2f} s", flush=True)
        seconds, theirs = run_library(dsn, view_dsn, PostgresCartTotals, last)
        assert theirs == ours, "PostgreSQL view differs from cart_summary"
        results["eventsourcing ProjectionRunner, PostgreSQL view"] = seconds
        print(f"eventsourcing (PostgreSQL view): {seconds:.2f} s", flush=True)
        base = results["projectionist (ingest + cart_summary v1)"]
        print(f"\n{events:,} events, {len(ours):,} carts; same totals per cart in every run")
        for name, value in results.items():
            print(f"  {name:<50} {value:8.2f} s  {events / value:>10,.0f} events/s  ×{value / base:6.1f}")
    finally:
        with connect(server.start(), autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if args.home is None:
            server.stop()
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
