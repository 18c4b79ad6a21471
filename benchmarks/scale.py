"""How each stage's cost grows with the store: whole commands at several sizes, per million events.

For each size N (``--sizes``, default 250,000, 500,000 and 1,000,000 events), a native store of N
shop events (``_store_data``, filled on the server side) and a fresh Projectionist home, then the
commands an operator runs, each timed as a whole process:

- ``ingest`` (batches of ``--batch-size``, 500,000 by default: the CLI's default when the figures in
  benchmarks/RESULTS.md were taken; the CLI's is now 2,000,000);
- ``rebuild cart_summary --version 1`` (an SQL body) and ``--version 2`` (a fold);
- ``diff cart_summary 1 2`` (one row per cart on each side);
- ``archive --older-than 0s`` (every finished stream to the cold tier, verified);
- ``maintain --older-than 0s`` (merge, expire, delete files).

And what the lake holds afterwards: bytes under the data path, the catalog database's size
(``pg_database_size``), DuckLake snapshots and live data files. Printed per size and as seconds (or
bytes) per million events, so a stage whose cost per million stays flat grows linearly; the last
column is the largest size's cost per million over the smallest's. docs/scale.md reads this table.

Run: ``uv run python benchmarks/scale.py [--sizes 250000,500000,1000000] [--home /tmp/scale-home]``;
``--keep`` leaves the homes and the store server running (by default both are stopped and removed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._store_data import store_with_events  # noqa: E402
from eventstore.connection import EmbeddedServer, connect, with_database  # noqa: E402

CLI = [sys.executable, "-m", "pipelines.cli"]
STAGES = (
    ("ingest", ["ingest"]),
    ("rebuild SQL (cart_summary v1)", ["rebuild", "cart_summary", "--version", "1"]),
    ("rebuild fold (cart_summary v2)", ["rebuild", "cart_summary", "--version", "2"]),
    ("diff v1 v2", ["diff", "cart_summary", "1", "2"]),
    ("archive --older-than 0s", ["archive", "--older-than", "0s"]),
    ("maintain --older-than 0s", ["maintain", "--older-than", "0s"]),
)


def run(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode not in (0, 1):  # diff exits 1 when the versions differ, as they do here
        raise SystemExit(f"projectionist {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}")
    return seconds


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def lake_sizes(home: Path) -> dict[str, float]:
    """Data path bytes, catalog database bytes, snapshots and live data files of the lake under ``home``."""
    server = EmbeddedServer(home).start()
    with connect(with_database(server, "projectionist_lake")) as conn:
        catalog = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        snapshots = conn.execute("SELECT count(*) FROM ducklake_snapshot").fetchone()
        files = conn.execute("SELECT count(*) FROM ducklake_data_file WHERE end_snapshot IS NULL").fetchone()
    return {
        "data path bytes": float(_bytes(home / "lake")),
        "catalog bytes": float(catalog[0] if catalog else 0),
        "snapshots": float(snapshots[0] if snapshots else 0),
        "data files": float(files[0] if files else 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="250000,500000,1000000")
    parser.add_argument("--batch-size", type=int, default=500_000)
    parser.add_argument("--home", type=Path, default=Path("/tmp/scale-home"))
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = args.home.resolve()
    store_home = base / "store"
    results: dict[int, dict[str, float]] = {}
    homes: list[Path] = []
    try:
        for size in sizes:
            dsn = store_with_events(store_home, size, quiet=True)
            home = base / f"lake-{size}"
            shutil.rmtree(home, ignore_errors=True)
            homes.append(home)
            env = {**os.environ, "PROJECTIONIST_HOME": str(home), "PROJECTIONIST_EVENT_STORE_DSN": dsn}
            env.pop("PROJECTIONIST_LAKE", None)
            env.pop("PROJECTIONIST_LAKE_DATA", None)
            measured: dict[str, float] = {}
            for label, command in STAGES:
                extra = ["--batch-size", str(args.batch_size)] if command == ["ingest"] else []
                measured[label] = run(env, *command, *extra)
                if label == "ingest":
                    measured.update(lake_sizes(home))  # the lake as ingested, before archive and maintain
                print(f"  {size:>10,} events  {label:<32} {measured[label]:8.2f} s", flush=True)
            results[size] = measured
    finally:
        if not args.keep:
            for home in homes:
                subprocess.run([*CLI, "--home", str(home), "down"], capture_output=True, check=False)
                shutil.rmtree(home, ignore_errors=True)
            EmbeddedServer(store_home).stop()
            shutil.rmtree(base, ignore_errors=True)
    load = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} cores, load average {load:.1f} at the end; whole commands, one run each")
    header = "".join(f"{s:>14,}" for s in sizes)
    print(f"{'stage':<34}{header}   per M events at each size{'':>6}growth")
    keys = [label for label, _ in STAGES] + ["data path bytes", "catalog bytes", "snapshots", "data files"]
    for key in keys:
        values = [results[s][key] for s in sizes]
        per_million = [v / (s / 1e6) for v, s in zip(values, sizes, strict=True)]
        unit = "s" if key in dict(STAGES) else ""
        shown = "".join(f"{v:>13,.2f}{unit}" if unit else f"{v:>14,.0f}" for v in values)
        per = " ".join(f"{p:,.2f}" if unit else f"{p:,.0f}" for p in per_million)
        growth = per_million[-1] / per_million[0] if per_million[0] else float("nan")
        print(f"{key:<34}{shown}   {per:<30} {growth:5.2f}x")


if __name__ == "__main__":
    main()
