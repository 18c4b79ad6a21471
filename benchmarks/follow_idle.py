"""The cost of an idle `projectionist follow` cycle, beside the least such a cycle must read.

`follow` polls: every ``--interval`` it ingests what the store settled and advances every live and
candidate projection version. Most cycles find nothing new, so what an idle cycle costs is what
following costs a machine (and the lake's catalog database) while nothing happens.

Measured in one process, over the demo's store and lake under ``$PROJECTIONIST_HOME`` (made by
``projectionist demo`` if missing), rounds interleaved, best and median of ``--repeat``:

- ``idle cycle``: one ``pipelines.follow.Follower.cycle`` with nothing new, what `follow` runs every
  ``--interval``: ``ingest`` and ``project`` on its open connections (read-only store sessions), and
  the check of a transaction holding the safe head back;
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

from eventstore.settings import Settings  # noqa: E402
from pipelines.follow import Follower  # noqa: E402
from projections import discover  # noqa: E402
from warehouse.ingest import lake_checkpoint  # noqa: E402
from warehouse.lake import LakeConfig, open_lake  # noqa: E402
from warehouse.versions import list_versions  # noqa: E402


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
    con.close()
    registry = discover()
    follower = Follower(settings, registry, log=lambda _: None, warn=lambda _: None)
    follower.cycle()  # anything the store settled since: the rounds below find nothing new
    follower.cycle()
    assert follower.lake is not None and follower.source is not None and follower.outage_since is None
    versions = sum(v.state in ("live", "ready") for v in list_versions(follower.lake))
    cycles: list[float] = []
    least: list[float] = []
    for _ in range(args.repeat):
        _, before = lake_checkpoint(follower.lake)
        started = time.perf_counter()
        follower.cycle()
        cycles.append(time.perf_counter() - started)
        _, after = lake_checkpoint(follower.lake)
        assert after == before and follower.outage_since is None, "the store changed (or failed) during the benchmark"
        started = time.perf_counter()
        checkpoint, _ = lake_checkpoint(follower.lake)
        follower.source.head(checkpoint)
        least.append(time.perf_counter() - started)
    _, events = lake_checkpoint(follower.lake)
    follower.close()
    print(f"demo lake: {events:,} events, {versions} live or candidate versions; best / median of {args.repeat}")
    for label, values in (("idle cycle", cycles), ("least read", least)):
        print(f"{label:>11}: {min(values) * 1000:6.1f} ms / {statistics.median(values) * 1000:6.1f} ms")
    print(
        f"idle cycle / least read: {min(cycles) / min(least):.1f}x (best), "
        f"{statistics.median(cycles) / statistics.median(least):.1f}x (median)"
    )


if __name__ == "__main__":
    main()
