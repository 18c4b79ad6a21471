"""Ingest benchmark (issue 3): store → lake beside the raw PostgreSQL → Arrow read and dlt's load.

    uv run --group bench python benchmarks/ingest.py --events 1000000

Each contender runs in its own process (peak RSS is that process's ``ru_maxrss``) on the same
table of an embedded PostgreSQL under ``--home``, reached over TCP on 127.0.0.1 so every client
(dlt's connectorx included) can use it:

- ``raw read``: the fastest PostgreSQL → Arrow read measured here, the better of DuckDB's postgres
  scanner running the gap-safe query and its parallel table scan, every Arrow batch counted;
- ``dlt``: dlt's ``sql_database`` source (``sql_table``, fastest backend available: connectorx,
  else pyarrow) into its DuckDB destination;
- ``ingest``: ``warehouse.ingest.ingest`` into a fresh DuckLake (PostgreSQL catalog in the same
  server, Parquet on local disk), checkpoint per commit.

Goals: ingest ≥ 0.8 × raw read, ≥ 3 × dlt, peak RSS < 1 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._lake_data import bulk_append  # noqa: E402
from eventstore.connection import EmbeddedServer, connect, ensure_database, with_database  # noqa: E402

PORT = 55439


def _tcp_dsn(dbname: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{PORT}/{dbname}"


def prepare(home: Path, events: int) -> str:
    """Start the server on TCP and make sure database bench_lake_<events> holds ``events`` events."""
    from pipelines.server import listen_on_port, role_password

    server = EmbeddedServer(home)
    listen_on_port(server, PORT)
    admin = server.start()
    # TCP logins need the superuser's password (docs/security.md); every stage's process and client
    # (libpq, DuckDB's postgres scanner, dlt's SQLAlchemy) takes it from the environment.
    os.environ["PGPASSWORD"], _ = role_password(admin, home, "postgres")
    name = f"bench_lake_{events}"
    dsn = ensure_database(admin, name)
    with connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('public.events') IS NOT NULL").fetchone()
        have = conn.execute("SELECT count(*) FROM events").fetchone()[0] if exists and exists[0] else 0  # type: ignore[index]
    if have != events:
        with connect(dsn, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS events")
        started = time.monotonic()
        bulk_append(dsn, events, transactions=max(4, events // 250_000))
        with connect(dsn, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE events")
        print(f"loaded {events:,} events in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return name


def stage_raw(dbname: str, variant: str) -> dict[str, Any]:
    from eventstore.adapters.native import NativeReader
    from eventstore.positions import START

    reader = NativeReader(_tcp_dsn(dbname))
    head = reader.head()
    con = reader.duckdb()
    query = {
        "gap-safe query": reader.duckdb_relation_sql(START, head.bound),
        "parallel table scan": "SELECT * FROM store.public.events",
    }[variant]
    cpu = time.process_time()
    started = time.monotonic()
    rows = 0
    for batch in con.sql(query).to_arrow_reader(1_000_000):
        rows += batch.num_rows
    seconds = time.monotonic() - started
    return {"seconds": seconds, "events": rows, "variant": variant, "cpu": time.process_time() - cpu}


def stage_dlt(dbname: str, out: Path) -> dict[str, Any]:
    import dlt
    from dlt.sources.sql_database import sql_table

    # dlt's fastest backend, connectorx, panics on the store's xid8 column ("not implemented: xid8"),
    # so dlt runs its next fastest: pyarrow (SQLAlchemy cursor batches turned into Arrow tables).
    backend = "pyarrow"
    credentials = f"postgresql+psycopg://postgres@127.0.0.1:{PORT}/{dbname}"
    table = sql_table(credentials=credentials, table="events", backend=backend, chunk_size=100_000)
    pipeline = dlt.pipeline(
        pipeline_name="bench_ingest",
        destination=dlt.destinations.duckdb(str(out / "dlt.duckdb")),
        dataset_name="shop",
        pipelines_dir=str(out / "dlt-pipelines"),
    )
    cpu = time.process_time()
    started = time.monotonic()
    pipeline.run(table)
    seconds = time.monotonic() - started
    cpu = time.process_time() - cpu
    import duckdb

    con = duckdb.connect(str(out / "dlt.duckdb"), read_only=True)
    rows = con.execute("SELECT count(*) FROM shop.events").fetchone()[0]  # type: ignore[index]
    return {"seconds": seconds, "events": rows, "variant": f"sql_table, backend {backend}", "cpu": cpu}


def stage_ingest(dbname: str, out: Path, batch_size: int, partitioned: bool = True) -> dict[str, Any]:
    from eventstore.adapters import NativeAdapter
    from warehouse.ingest import ingest
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.sources import StoreSource

    lake_db = f"{dbname}_lake"
    admin = with_database(_tcp_dsn(dbname), "postgres")
    with connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{lake_db}" WITH (FORCE)')
    catalog = ensure_database(admin, lake_db)
    config = LakeConfig("postgres", catalog, str(out / f"lake-data-{partitioned}") + "/")
    with NativeAdapter(_tcp_dsn(dbname)) as reader:
        con = open_lake(config, memory_limit=os.environ.get("BENCH_MEMORY_LIMIT") or None)  # set up before the clock
        if not partitioned:
            con.execute("ALTER TABLE raw.events RESET PARTITIONED BY")
        cpu = time.process_time()
        started = time.monotonic()
        result = ingest(con, StoreSource(reader), batch_size=batch_size, compact_after=None)
        seconds = time.monotonic() - started
        cpu = time.process_time() - cpu
    rows = con.execute("SELECT count(*) FROM raw.events").fetchone()[0]  # type: ignore[index]
    assert rows == result.events
    layout = "month partitions" if partitioned else "unpartitioned"
    limit = os.environ.get("BENCH_MEMORY_LIMIT") or "default"
    return {
        "seconds": seconds,
        "events": rows,
        "variant": f"{result.batches} commits of ≤ {batch_size:,}, {layout}, memory limit {limit}",
        "cpu": cpu,
    }


def stage_write(dbname: str, out: Path) -> dict[str, Any]:
    """The lake write alone: the ingest's rows, already in DuckDB memory, into a fresh raw.events.

    Not a contender: it says how much of the ingest's CPU goes to writing Parquet (and casting
    to JSON), work the raw read does not do. The rows are read before the clock starts.
    """
    from eventstore.adapters import NativeAdapter
    from eventstore.positions import START
    from warehouse.ingest import optional_columns, select_raw
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.sources import StoreSource

    lake_db = f"{dbname}_write"
    admin = with_database(_tcp_dsn(dbname), "postgres")
    with connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{lake_db}" WITH (FORCE)')
    catalog = ensure_database(admin, lake_db)
    with NativeAdapter(_tcp_dsn(dbname)) as reader:
        con = open_lake(LakeConfig("postgres", catalog, str(out / "lake-data-write") + "/"))
        source = StoreSource(reader)
        source.attach(con)
        bound = reader.head().bound
        batch = source.batch_sql(START, bound, None)
        con.execute(f"CREATE TEMP TABLE rows AS {select_raw(source, batch, optional_columns(con, source, bound))}")
        cpu = time.process_time()
        started = time.monotonic()
        con.execute("INSERT INTO raw.events SELECT * FROM rows")
        seconds = time.monotonic() - started
        write_cpu = time.process_time() - cpu  # every thread of this process
    rows = con.execute("SELECT count(*) FROM raw.events").fetchone()[0]  # type: ignore[index]
    return {"seconds": seconds, "events": rows, "variant": "lake write of rows in memory", "cpu": write_cpu}


def _server_cpu(home: Path) -> float | None:
    """CPU seconds of the server's exited backends (the postmaster's reaped children), if on Linux."""
    try:
        postmaster = int((home / "postgres" / "postmaster.pid").read_text().split()[0])
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime + cstime


def run_stage(stage: str, dbname: str, out: Path, batch_size: int, home: Path) -> dict[str, Any]:
    """Run one contender in a child process; its result plus the child's peak RSS and CPU."""
    server_before = _server_cpu(home)
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--stage",
            stage,
            "--db",
            dbname,
            "--out",
            str(out),
            "--batch-size",
            str(batch_size),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["rss_mib"] = usage.ru_maxrss / 1024
    time.sleep(0.3)  # let the postmaster reap the child's backends: their CPU then counts as its own
    server_after = _server_cpu(home)
    result["server_cpu"] = server_after - server_before if server_before is not None and server_after else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--home", type=Path, default=Path("/tmp/projectionist-bench-ingest"))
    parser.add_argument("--batch-size", type=int, default=1_000_000)
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--memory-limit", help="DuckDB memory limit of the ingest (the CLI's default: 512MB)")
    parser.add_argument("--unpartitioned", action="store_true", help="also ingest into an unpartitioned raw.events")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        if args.stage == "raw-query":
            result = stage_raw(args.db, "gap-safe query")
        elif args.stage == "raw-scan":
            result = stage_raw(args.db, "parallel table scan")
        elif args.stage == "dlt":
            result = stage_dlt(args.db, args.out)
        elif args.stage == "write":
            result = stage_write(args.db, args.out)
        elif args.stage == "ingest-unpartitioned":
            result = stage_ingest(args.db, args.out, args.batch_size, partitioned=False)
        else:
            result = stage_ingest(args.db, args.out, args.batch_size)
        print(json.dumps(result))
        return
    if args.memory_limit:
        os.environ["BENCH_MEMORY_LIMIT"] = args.memory_limit  # read by the ingest stage's process
    dbname = prepare(args.home, args.events)
    out = Path(tempfile.mkdtemp(prefix="projectionist-bench-ingest-", dir="/tmp"))
    try:
        raws = [run_stage(stage, dbname, out, args.batch_size, args.home) for stage in ("raw-query", "raw-scan")]
        results = {"raw read": min(raws, key=lambda r: r["seconds"])}
        results["raw read"]["all"] = {r["variant"]: round(r["seconds"], 2) for r in raws}
        if not args.skip_dlt:
            results["dlt"] = run_stage("dlt", dbname, out, args.batch_size, args.home)
        results["ingest"] = run_stage("ingest", dbname, out, args.batch_size, args.home)
        if args.unpartitioned:
            results["ingest, no partitions"] = run_stage(
                "ingest-unpartitioned", dbname, out, args.batch_size, args.home
            )
        write = run_stage("write", dbname, out, args.batch_size, args.home)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    for name, r in results.items():
        assert r["events"] == args.events, f"{name} read {r['events']} events, not {args.events}"
    ingest_rate = args.events / results["ingest"]["seconds"]
    print(f"events: {args.events:,} (PostgreSQL {dbname}, 2 cores)")
    print(f"{'contender':<22} {'seconds':>8} {'events/s':>11} {'ingest ×':>9} {'peak RSS':>10} {'CPU s':>13}  variant")
    for name, r in results.items():
        rate = args.events / r["seconds"]
        cpu = f"{r['cpu']:.1f} + {r['server_cpu']:.1f}" if r.get("server_cpu") is not None else f"{r['cpu']:.1f}"
        print(
            f"{name:<22} {r['seconds']:>8.2f} {rate:>11,.0f} {ingest_rate / rate:>9.2f} "
            f"{r['rss_mib']:>7,.0f} MiB {cpu:>13}  {r['variant']}"
        )
    raw = results["raw read"]
    ratio = ingest_rate / (args.events / raw["seconds"])
    print(f"ingest / raw read: {ratio:.2f} (goal ≥ 0.8; raw read variants, seconds: {raw['all']})")
    raw_cpu = results["raw read"]["cpu"] + (results["raw read"].get("server_cpu") or 0.0)
    ingest_cpu = results["ingest"]["cpu"] + (results["ingest"].get("server_cpu") or 0.0)
    print(
        f"CPU (client + server): raw read {raw_cpu:.1f} s, ingest {ingest_cpu:.1f} s, of which the lake write "
        f"alone {write['cpu']:.1f} s ({write['seconds']:.2f} s wall from memory). Where client and server share "
        f"the cores, ingest / raw read cannot exceed about raw CPU / (raw CPU + write CPU) = "
        f"{raw_cpu / (raw_cpu + write['cpu']):.2f}."
    )
    if "dlt" in results:
        print(f"ingest / dlt:      {ingest_rate / (args.events / results['dlt']['seconds']):.2f} (goal ≥ 3)")


if __name__ == "__main__":
    main()
