"""A rebuild in K shards (K processes at once) beside the same rebuild in one process: whole commands.

Measured as an operator runs them, on the demo's lake under ``$PROJECTIONIST_HOME`` (``projectionist
demo --events N`` makes it if missing), rounds interleaved, best of ``--repeat``:

- ``one process``: ``projectionist rebuild NAME --version V``;
- ``K shards``: ``projectionist rebuild NAME --version V --shards K`` (plan, K worker processes, one
  swap commit), checked to give the same rows.

For cart_summary v1 (an SQL body: DuckDB already uses every core in one process) and v2 (a fold:
Python, one core per process), so the ratio says where sharding pays on this machine.

Run: ``PROJECTIONIST_HOME=/tmp/shard-home uv run python benchmarks/sharded_rebuild.py [--events 400000] [--shards 2]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "pipelines.cli"]


def run(*args: str) -> str:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"projectionist {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def rows(version: int) -> str:
    return run("sql", f"SELECT * FROM projections.cart_summary_v{version} ORDER BY ALL", "--csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    home = Path(os.environ.get("PROJECTIONIST_HOME", ".projectionist")).resolve()
    if not (home / "lake").exists():
        run("demo", "--events", str(args.events))
    events = run("sql", "SELECT count(*) FROM raw.all_events", "--csv").split()[-1]
    print(f"{events} events in the lake, {os.cpu_count()} cores; best of {args.repeat}")
    print(f"{'':28} {'one process':>12} {f'{args.shards} shards':>12} {'speed-up':>9}")
    for version, body in ((1, "SQL"), (2, "fold")):
        reference = None
        best = {"one": float("inf"), "shards": float("inf")}
        for _ in range(args.repeat):
            for label, extra in (("one", []), ("shards", ["--shards", str(args.shards)])):
                started = time.monotonic()
                run("rebuild", "cart_summary", "--version", str(version), *extra)
                best[label] = min(best[label], time.monotonic() - started)
                built = rows(version)
                reference = reference or built
                if built != reference:
                    raise SystemExit(f"cart_summary v{version}: the {label} rebuild differs from the first")
        ratio = best["one"] / best["shards"]
        print(
            f"cart_summary v{version} ({body})".ljust(28)
            + f" {best['one']:11.1f}s {best['shards']:11.1f}s {ratio:8.2f}x"
        )


if __name__ == "__main__":
    main()
