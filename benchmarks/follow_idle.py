"""The cost of an idle `projectionist follow` cycle, beside the least such a cycle must read.

`follow` polls: every ``--interval`` it ingests what the store settled and advances every live and
candidate projection version. Most cycles find nothing new, so what an idle cycle costs is what
following costs a machine (and the lake's catalog database) while nothing happens.

Measured in one process, over the demo's store and lake under ``$PROJECTIONIST_HOME`` (made by
``projectionist demo`` if missing), rounds interleaved, best and median of ``--repeat``:

- ``idle cycle``: ``warehouse.ingest.ingest`` then ``warehouse.versions.project`` with nothing new,
  as `follow`'s loop runs them;
- ``least read`` (the limit): what any cycle must learn, the lake's ingest checkpoint (one
  statement, its own transaction) and the store's safe head (``source.head``).

Run: ``PROJECTIONIST_HOME=/tmp/follow-home uv run python benchmarks/follow_idle.py [--repeat 30]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventstore.connection import event_store_dsn  # noqa: E402
from eventstore.reader import NativeReader  # noqa: E402
from eventstore.settings import Settings  # noqa: E402
from projections import discover  # noqa: E402
from warehouse.ingest import NativeSource, ingest, lake_checkpoint  # noqa: E402
from warehouse.lake import LakeConfig, open_lake  # noqa: E402
from warehouse.versions import list_versions, project  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    settings = Settings.from_env()
    config = LakeConfig.from_settings(settings)
    con = open_lake(config)
    if not list_versions(con):
        con.close()
        subprocess.run([sys.executable, "-m", "pipelines.cli", "demo"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        con = open_lake(config)
    registry = discover()
    with NativeReader(event_store_dsn(settings), settings.store_schema, settings.store_table) as reader:
        source = NativeSource(reader)
        ingest(con, source)  # anything the store settled since: the rounds below find nothing new
        project(con, registry)
        versions = sum(v.state in ("live", "ready") for v in list_versions(con))
        cycles: list[float] = []
        least: list[float] = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            ingested = ingest(con, source)
            advanced = project(con, registry)
            cycles.append(time.perf_counter() - started)
            assert ingested.events == 0 and not advanced, "the store changed during the benchmark"
            started = time.perf_counter()
            checkpoint, _ = lake_checkpoint(con)
            source.head(checkpoint)
            least.append(time.perf_counter() - started)
        _, events = lake_checkpoint(con)
    con.close()
    print(f"demo lake: {events:,} events, {versions} live or candidate versions; best / median of {args.repeat}")
    for label, values in (("idle cycle", cycles), ("least read", least)):
        print(f"{label:>11}: {min(values) * 1000:6.1f} ms / {statistics.median(values) * 1000:6.1f} ms")
    print(
        f"idle cycle / least read: {min(cycles) / min(least):.1f}x (best), "
        f"{statistics.median(cycles) / statistics.median(least):.1f}x (median)"
    )


if __name__ == "__main__":
    main()
