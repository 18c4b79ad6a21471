"""Child processes for the lake's concurrency and crash tests: ``python -m tests.warehouse._lake_proc``.

``reader CATALOG DATA STOP_FILE``: attach the lake read-only and, until STOP_FILE exists, print one
line per query: the row count of raw.events and the checkpoint's event count, read in one query
(one snapshot). ``ingest CATALOG DATA STORE_DSN BATCH``: ingest everything in batches of BATCH.
"""

from __future__ import annotations

import sys
from pathlib import Path

from eventstore.reader import NativeReader
from warehouse.ingest import NativeSource, ingest
from warehouse.lake import LakeConfig, open_lake


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
    with NativeReader(dsn) as reader:
        con = open_lake(config)
        print("ready", flush=True)
        result = ingest(con, NativeSource(reader), batch_size=batch, compact_after=8)
        print(f"done {result.events}", flush=True)


def main(argv: list[str]) -> None:
    kind, catalog, data = argv[:3]
    config = LakeConfig("postgres", catalog, data)
    if kind == "reader":
        read_loop(config, Path(argv[3]))
    else:
        ingest_all(config, argv[3], int(argv[4]))


if __name__ == "__main__":
    main(sys.argv[1:])
