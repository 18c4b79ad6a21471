"""raw.events laid out three ways for a lake with tenants: what a tenant filter gains, what ingest and files cost.

One native store of ``--events`` shop events (carts spread over ``--tenants`` tenants, the tenant in
``metadata.tenant_id``, read through ``PROJECTIONIST_TENANT_FIELD``), ingested into three lakes whose
``raw.events`` is:

- ``month``: partitioned by month of ``recorded_at``, as every lake is (warehouse/lake.py);
- ``month, sorted``: the same, plus DuckLake's ``SET SORTED BY (tenant_id)``;
- ``tenant, month``: partitioned by ``tenant_id`` then month.

Each lake takes one bulk ingest, then ``--commits`` small ones (50 carts each, as ``follow`` writes
them). Then, best of ``--repeat``: one tenant's events (``WHERE tenant_id = ...``, what an analyst
filters) and a query over every event. Files read come from DuckDB's ``EXPLAIN ANALYZE``.

Run: ``uv run python benchmarks/tenant_partitioning.py [--events 1000000] [--tenants 20] [--commits 10]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._lake_data import bulk_append
from eventstore.connection import EmbeddedServer, connect, ensure_database
from eventstore.settings import Settings
from warehouse.ingest import ingest, table_files
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import open_source

LAYOUTS = {
    "month": None,
    "month, sorted": "ALTER TABLE raw.events SET SORTED BY (tenant_id)",
    "tenant, month": "ALTER TABLE raw.events SET PARTITIONED BY (tenant_id, year(recorded_at), month(recorded_at))",
}
ONE_TENANT = "SELECT count(*), count(DISTINCT stream_id), max(global_position) FROM raw.events WHERE tenant_id = 't003'"
EVERY_EVENT = "SELECT count(*), count(DISTINCT stream_id) FROM raw.events"


def tag(tenants: int) -> str:
    """SQL giving each untagged event its cart's tenant (by a hash of the stream id)."""
    return (
        "UPDATE events SET metadata = metadata || jsonb_build_object('tenant_id', "
        f"'t' || lpad((abs(hashtext(stream_id)) % {tenants})::text, 3, '0')) WHERE NOT metadata ? 'tenant_id'"
    )


def best(con: object, query: str, repeat: int) -> float:
    con.execute(query).fetchall()  # type: ignore[attr-defined]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        con.execute(query).fetchall()  # type: ignore[attr-defined]
        times.append(time.perf_counter() - started)
    return min(times)


def files_read(con: object, query: str) -> int:
    plan = con.execute(f"EXPLAIN ANALYZE {query}").fetchall()[0][1]  # type: ignore[attr-defined]
    found = re.search(r"Total Files Read: (\d+)", plan)
    return int(found.group(1)) if found else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--commits", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tenant-bench-", dir="/tmp"))
    server = EmbeddedServer(root / "pg")
    dsn = server.start()
    try:
        store = ensure_database(dsn, "store")
        bulk_append(store, args.events, transactions=4)
        with connect(store) as conn:
            conn.execute(tag(args.tenants))
        settings = Settings.from_env({"PROJECTIONIST_TENANT_FIELD": "tenant_id"})
        print(f"{args.events:,} events, {args.tenants} tenants, then {args.commits} commits of 50 carts")
        print("layout         | bulk ingest | small commits | files | one tenant (files read) | every event")
        for index, (label, ddl) in enumerate(LAYOUTS.items()):
            data = str(root / f"data{index}") + "/"
            con = open_lake(LakeConfig("postgres", ensure_database(dsn, f"lake{index}"), data))
            if ddl:
                con.execute(ddl)
            with open_source(settings, store) as source:
                started = time.perf_counter()
                ingest(con, source, compact_after=None)
                bulk = time.perf_counter() - started
                small = 0.0
                for _ in range(args.commits):
                    bulk_append(store, 250, transactions=1)
                    with connect(store) as conn:
                        conn.execute(tag(args.tenants))
                    started = time.perf_counter()
                    ingest(con, source, compact_after=None)
                    small += time.perf_counter() - started
            files = table_files(con)["raw.events"][0]
            one, every = best(con, ONE_TENANT, args.repeat), best(con, EVERY_EVENT, args.repeat)
            read = files_read(con, ONE_TENANT)
            print(
                f"{label:<14} | {bulk:9.2f} s | {small:11.2f} s | {files:5} | {1000 * one:8.1f} ms ({read:3}) "
                f"         | {1000 * every:7.1f} ms"
            )
            con.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
