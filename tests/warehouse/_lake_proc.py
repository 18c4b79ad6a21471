"""Child processes for the lake's concurrency and crash tests: ``python -m tests.warehouse._lake_proc``.

``reader CATALOG DATA STOP_FILE``: attach the lake read-only and, until STOP_FILE exists, print one
line per query: the row count of raw.events and the checkpoint's event count, read in one query
(one snapshot). ``ingest CATALOG DATA STORE_DSN BATCH``: ingest everything in batches of BATCH.
``rebuild CATALOG DATA NAME VERSION CHUNK_EVENTS PAUSE_AFTER``: rebuild a bundled projection version in
chunks, printing ``chunk <n> <events>`` after each committed chunk; after chunk PAUSE_AFTER (0: never)
it prints ``paused`` and waits for its parent to kill it, so a crash lands right after that commit.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from eventstore.adapters import NativeAdapter
from projections import discover
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import rebuild


def read_loop(config: LakeConfig, stop_file: Path) -> None:
    con = open_lake(config, read_only=True)
    print("ready", flush=True)
    while not stop_file.exists():
        row = con.execute(
            "SELECT (SELECT count(*) FROM raw.events), (SELECT events FROM meta.checkpoints WHERE consumer = 'ingest')"
        ).fetchone()
        assert row is not None
        print(f"{row[0]} {row[1]}", flush=True)
    con.close()


def ingest_all(config: LakeConfig, dsn: str, batch: int) -> None:
    with NativeAdapter(dsn) as reader:
        con = open_lake(config)
        print("ready", flush=True)
        result = ingest(con, StoreSource(reader), batch_size=batch, compact_after=8)
        print(f"done {result.events}", flush=True)


def rebuild_in_chunks(config: LakeConfig, name: str, version: int, chunk_events: int, pause_after: int) -> None:
    con = open_lake(config)
    committed = 0

    def progress(events: int) -> None:
        nonlocal committed
        committed += 1
        print(f"chunk {committed} {events}", flush=True)
        if committed == pause_after:
            print("paused", flush=True)
            time.sleep(600)  # the parent kills this process (SIGKILL) here

    print("ready", flush=True)
    result = rebuild(
        con, discover(bundled=True, folder=None), name, version, progress=progress, chunk_events=chunk_events
    )
    print(f"done {result.chunks}", flush=True)


def main(argv: list[str]) -> None:
    kind, catalog, data = argv[:3]
    config = LakeConfig("postgres", catalog, data)
    if kind == "reader":
        read_loop(config, Path(argv[3]))
    elif kind == "rebuild":
        rebuild_in_chunks(config, argv[3], int(argv[4]), int(argv[5]), int(argv[6]))
    else:
        ingest_all(config, argv[3], int(argv[4]))


if __name__ == "__main__":
    main(sys.argv[1:])
