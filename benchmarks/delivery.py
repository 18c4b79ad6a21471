"""Benchmark: changes delivered per second to a PostgreSQL outbox and to a local webhook receiver.

A native store with ``--events`` shop events (five per cart) is ingested and ``cart_summary`` projected,
so its first delivery is one insert per cart. Measured in the same run, on the same data:

- outbox: ``deliver`` to an outbox consumer (change computation from the lake, COPY into
  ``projectionist.outbox``, the cursor in the same transaction), beside a plain psycopg ``executemany``
  INSERT of the same changes (already in memory) into a table of the same columns;
- webhook: ``deliver`` to a webhook consumer (batches of ``--batch-size``, signed, JSON) received by a
  ``http.server`` in another process, beside a plain ``urllib`` loop building and POSTing the same JSON
  batches from the changes already in memory (no signature, no retries, no cursor);
- the change computation alone (``changes`` from the beginning), which both deliveries include.

Run: ``uv run python benchmarks/delivery.py [--events 100000] [--batch-size 500]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

from benchmarks._lake_data import bulk_append
from eventstore.adapters import NativeAdapter
from eventstore.connection import EmbeddedServer, connect, ensure_database
from eventstore.native_store import create_schema
from projections import discover
from warehouse.feeds import Consumer, add_consumer, changes, deliver, ensure_outbox
from warehouse.feeds.delivery import OUTBOX_DDL
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import project

_RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-delivery-", dir="/tmp"))
    server = EmbeddedServer(root)
    dsn = server.start()
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        store = ensure_database(dsn, "store")
        with connect(store) as conn:
            create_schema(conn)
        bulk_append(store, args.events, transactions=4)
        outbox = ensure_database(dsn, "outbox")
        registry = discover()
        con = open_lake(LakeConfig("postgres", ensure_database(dsn, "lake"), f"{root}/lake-data/"))
        with NativeAdapter(store) as reader:
            ingest(con, StoreSource(reader))
        project(con, registry, names=["cart_summary"])
        rows = con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone()
        print(f"{args.events:,} events, {rows[0] if rows else 0:,} carts in cart_summary (load average "
              f"{os.getloadavg()[0]:.1f})")  # fmt: skip

        started = time.perf_counter()
        computed = changes(con, registry, "cart_summary", 0, consumer="bench")
        compute = time.perf_counter() - started
        n = len(computed.changes)
        print(f"change computation alone: {n:,} changes in {compute:.2f} s ({n / compute:,.0f}/s)")

        ensure_outbox(outbox, "bench-outbox", "cart_summary")
        add_consumer(con, Consumer("bench-outbox", "outbox", "cart_summary", outbox))
        started = time.perf_counter()
        [result] = deliver(con, registry, "bench-outbox")
        ours = time.perf_counter() - started
        with psycopg.connect(outbox) as pg:
            for ddl in OUTBOX_DDL[1:2]:
                pg.execute(ddl.replace("projectionist.outbox", "public.plain_outbox"))
            cp = computed.checkpoint
            values = [
                ("bench", c.idempotency_key, "cart_summary", computed.to_version, c.op, c.key, c.row, c.content_hash,
                 c.previous_hash, 0, computed.to_snapshot, cp.transaction_id, cp.global_position,
                 c.last_global_position)
                for c in computed.changes
            ]  # fmt: skip
            started = time.perf_counter()
            with pg.cursor() as cur:
                cur.executemany(
                    "INSERT INTO public.plain_outbox (consumer, idempotency_key, projection, version, op, key, row, "
                    "content_hash, previous_hash, from_snapshot, to_snapshot, transaction_id, global_position, "
                    "last_global_position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    values,
                )
            pg.commit()
            plain = time.perf_counter() - started
        print(f"outbox:  deliver {result.changes:,} changes in {ours:.2f} s ({result.changes / ours:,.0f}/s); "
              f"plain executemany of the same rows {plain:.2f} s ({n / plain:,.0f}/s)")  # fmt: skip

        port = int((receiver.stdout.readline() if receiver.stdout else "0").strip())
        url = f"http://127.0.0.1:{port}/hook"
        os.environ["BENCH_HOOK_SECRET"] = "bench"
        add_consumer(
            con,
            Consumer("bench-hook", "webhook", "cart_summary", url, "BENCH_HOOK_SECRET", batch_size=args.batch_size),
        )
        started = time.perf_counter()
        [result] = deliver(con, registry, "bench-hook")
        ours = time.perf_counter() - started
        started = time.perf_counter()
        for i in range(0, n, args.batch_size):
            batch = computed.changes[i : i + args.batch_size]
            plain_changes = [
                {"idempotency_key": c.idempotency_key, "op": c.op, "key": json.loads(c.key),
                 "row": json.loads(c.row) if c.row else None, "content_hash": c.content_hash}
                for c in batch
            ]  # fmt: skip
            body = json.dumps({"changes": plain_changes}).encode()
            request = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
        plain = time.perf_counter() - started
        print(f"webhook: deliver {result.changes:,} changes in {result.requests} requests, {ours:.2f} s "
              f"({result.changes / ours:,.0f}/s); plain urllib loop of the same bodies {plain:.2f} s "
              f"({n / plain:,.0f}/s)")  # fmt: skip
        con.close()
    finally:
        receiver.kill()
        receiver.communicate()
        server.stop()


if __name__ == "__main__":
    main()
