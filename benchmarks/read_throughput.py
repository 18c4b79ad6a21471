"""Reader throughput: the gap-safe reader against the raw ways of pulling the same events out of PostgreSQL.

Every path reads the same settled events (the gap-safe query up to one fixed transaction
bound, except the DuckDB table scan, which reads the whole table: with no writers that is the
same rows) of a native store filled by ``_store_data.py``, each in a fresh subprocess so that
its peak RSS is its own. Prints events/s per path and the reader's ratio to the fastest raw path.

    uv run --group bench python benchmarks/read_throughput.py            # 2 M events
    uv run --group bench python benchmarks/read_throughput.py --events 200000 --repeat 3

Paths:
  reader             eventstore.adapters.native.NativeReader.read(), every Arrow batch consumed
  reader-sequential  the same reader forced to one query on one backend (the pre-slicing path)
  reader:workers=W:slice=S   the reader with W backends and S events per slice (tuning runs)
  psycopg-cursor     psycopg server-side cursor, rows as Python tuples
  psycopg-copy-text  COPY (gap-safe query) TO STDOUT, text bytes counted in Python
  adbc               adbc-driver-postgresql, Arrow record batches (binary COPY underneath)
  copy-binary        COPY (gap-safe query) TO STDOUT (FORMAT binary), bytes only: one backend's ceiling
  connectorx-2       connectorx, gap-safe query split on global_position into 2 partitions, Arrow
  duckdb-scan        DuckDB's postgres scanner, parallel scan of the whole table (not gap-safe as such)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.adapters.native import NativeReader
from eventstore.connection import EmbeddedServer, connect, libpq_conninfo
from eventstore.positions import START

READER_PATHS = ("reader", "reader-sequential")
RAW_PATHS = ("psycopg-cursor", "psycopg-copy-text", "adbc", "copy-binary", "connectorx-2", "duckdb-scan")
GAP_SAFE_RAW = ("psycopg-cursor", "psycopg-copy-text", "adbc", "copy-binary", "connectorx-2")


def _uri(dsn: str) -> str:
    """A postgresql:// URI (ADBC and connectorx take no key=value DSN); a socket directory goes in ?host=."""
    params = libpq_conninfo(dsn)
    host = str(params.get("host") or "localhost")
    user = params.get("user") or ""
    password = f":{params['password']}" if params.get("password") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{params['port']}" if params.get("port") else ""
    if host.startswith("/"):
        return f"postgresql://{auth}localhost{port}/{params['dbname']}?host={host}"
    return f"postgresql://{auth}{host}{port}/{params['dbname']}"


def run_reader(
    dsn: str, bound: int, batch_size: int, workers: int | None = None, slice_events: int | None = None
) -> int:
    with NativeReader(dsn) as reader:
        # Private tuning knobs, set only to compare variants (path "reader:workers=3:slice=200000").
        if workers is not None:
            reader._read_workers = workers
        if slice_events is not None:
            reader._slice_events = slice_events
        return sum(batch.num_rows for batch in reader.read(batch_size=batch_size))


def run_reader_sequential(dsn: str, bound: int, batch_size: int) -> int:
    return run_reader(dsn, bound, batch_size, workers=1)  # one query on one backend


def run_psycopg_cursor(dsn: str, bound: int, batch_size: int) -> int:
    rows = 0
    with connect(dsn) as conn, conn.cursor(name="bench") as cur:
        cur.itersize = 10_000
        cur.execute(NativeReader(dsn).query(START, bound))
        while chunk := cur.fetchmany(10_000):
            rows += len(chunk)
    return rows


def _copy(dsn: str, bound: int, options: str, count_lines: bool) -> int:
    rows = 0
    with connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY ({NativeReader(dsn).query(START, bound)}) TO STDOUT {options}") as copy:
            for data in copy:
                if count_lines:
                    rows += bytes(data).count(b"\n")  # COPY text escapes newlines inside values
        return rows


def run_psycopg_copy_text(dsn: str, bound: int, batch_size: int) -> int:
    return _copy(dsn, bound, "", count_lines=True)


def run_copy_binary(dsn: str, bound: int, batch_size: int) -> int:
    _copy(dsn, bound, "(FORMAT binary)", count_lines=False)
    return -1  # not decoded: the row count is not known without parsing


def run_adbc(dsn: str, bound: int, batch_size: int) -> int:
    import adbc_driver_postgresql.dbapi as adbc  # type: ignore[import-not-found]

    with adbc.connect(_uri(dsn)) as conn, conn.cursor() as cur:
        cur.execute(NativeReader(dsn).query(START, bound))
        return sum(batch.num_rows for batch in cur.fetch_record_batch())  # type: ignore[no-any-return]


def run_connectorx_2(dsn: str, bound: int, batch_size: int) -> int:
    import connectorx as cx  # type: ignore[import-not-found]

    table = cx.read_sql(
        _uri(dsn),
        NativeReader(dsn).query(START, bound),
        partition_on="global_position",
        partition_num=2,
        return_type="arrow",
    )
    return int(table.num_rows)


def run_duckdb_scan(dsn: str, bound: int, batch_size: int) -> int:
    con = NativeReader(dsn).duckdb()
    reader = con.sql("SELECT * FROM store.public.events").to_arrow_reader(batch_size)
    return sum(batch.num_rows for batch in reader)


RUNNERS: dict[str, Callable[[str, int, int], int]] = {
    "reader": run_reader,
    "reader-sequential": run_reader_sequential,
    "psycopg-cursor": run_psycopg_cursor,
    "psycopg-copy-text": run_psycopg_copy_text,
    "adbc": run_adbc,
    "copy-binary": run_copy_binary,
    "connectorx-2": run_connectorx_2,
    "duckdb-scan": run_duckdb_scan,
}


def child(path: str, dsn: str, bound: int, batch_size: int) -> None:
    """Run one path and print its figures as JSON (called in a fresh subprocess)."""
    started = time.perf_counter()
    cpu = time.process_time()
    name, *options = path.split(":")
    if options:  # only the reader takes options
        knobs = dict(option.split("=", 1) for option in options)
        rows = run_reader(
            dsn, bound, batch_size, int(knobs.get("workers", 0)) or None, int(knobs.get("slice", 0)) or None
        )
    else:
        rows = RUNNERS[name](dsn, bound, batch_size)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu": time.process_time() - cpu, "peak_kib": peak_kib}))


def _server_cpu(postmaster: int | None) -> float | None:
    """CPU seconds of the server's exited backends (the postmaster's reaped children), if local."""
    if postmaster is None:
        return None
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime + cstime


def measure(path: str, dsn: str, bound: int, batch_size: int, postmaster: int | None) -> dict[str, float]:
    before = _server_cpu(postmaster)
    command = [sys.executable, __file__, "--child", path, "--dsn", dsn]
    out = subprocess.run(
        [*command, "--bound", str(bound), "--batch-size", str(batch_size)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    time.sleep(0.2)  # let the postmaster reap the backends, which adds their CPU time to its own
    after = _server_cpu(postmaster)
    result["server_cpu"] = after - before if before is not None and after is not None else float("nan")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2_000_000, help="events in the store (default 2 M)")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("PROJECTIONIST_HOME", "/tmp/bench-home")))
    parser.add_argument("--repeat", type=int, default=1, help="runs per path; the best is reported")
    parser.add_argument("--batch-size", type=int, default=100_000)
    parser.add_argument("--paths", default=",".join(READER_PATHS + RAW_PATHS), help="comma-separated subset")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--bound", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dsn, args.bound, args.batch_size)
        return

    from _store_data import store_with_events

    paths = [p for p in args.paths.split(",") if p]
    unknown = {p.split(":")[0] for p in paths} - set(RUNNERS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}: choose from {', '.join(RUNNERS)}")
    dsn = store_with_events(args.home, args.events)
    postmaster = EmbeddedServer(args.home).running_pid()
    with NativeReader(dsn) as reader:
        head = reader.head()
    # Warm the page cache once so that the first path measured is not the one paying for it.
    with connect(dsn) as conn:
        conn.execute("SELECT count(*), sum(length(data::text)) FROM public.events").fetchone()
    print(f"{args.events:,} events, batch size {args.batch_size:,}, best of {args.repeat}, {os.cpu_count()} cores")
    # Rounds interleave the paths, so that load from elsewhere on the machine spreads over all of them.
    runs: dict[str, list[dict[str, float]]] = {path: [] for path in paths}
    for round_ in range(args.repeat):
        for path in paths:
            run = measure(path, dsn, head.bound, args.batch_size, postmaster)
            if run["rows"] not in (-1, args.events):
                raise SystemExit(f"{path} read {run['rows']:,} events, expected {args.events:,}")
            runs[path].append(run)
            print(f"  round {round_ + 1}: {path:<18} {run['seconds']:7.2f} s", flush=True)
    results = {path: min(runs[path], key=lambda r: r["seconds"]) for path in paths}

    def rate(path: str) -> float:
        return args.events / results[path]["seconds"]

    print()
    print("| path | seconds | events/s | CPU s client | CPU s server | events per CPU s | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for path, r in results.items():
        cpu = r["cpu"] + r["server_cpu"]
        print(
            f"| {path} | {r['seconds']:.2f} | {rate(path):,.0f} | {r['cpu']:.1f} | {r['server_cpu']:.1f} "
            f"| {args.events / cpu:,.0f} | {r['peak_kib'] / 1024:,.0f} |"
        )
    raw = [p for p in results if p in RAW_PATHS]
    safe = [p for p in results if p in GAP_SAFE_RAW]
    print()
    for path in (p for p in results if p.split(":")[0] in READER_PATHS):
        if raw:
            fastest = max(raw, key=rate)
            print(f"{path} / fastest raw path ({fastest}): {rate(path) / rate(fastest):.2f}")
        if safe:
            fastest = max(safe, key=rate)
            print(f"{path} / fastest gap-safe raw path ({fastest}): {rate(path) / rate(fastest):.2f}")
    if "reader" in results:
        print(f"reader peak RSS: {results['reader']['peak_kib'] / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
