"""Child process of the archive crash tests: ``python -m tests.warehouse._archive_proc STEP CATALOG DATA STORE_DSN``.

STEP ``lake`` runs ``archive_lake`` (0s), STEP ``store`` runs ``archive_in_store`` on the native store; either
prints ``paused`` just before its commit (the lake's, or the store's) and waits there for its parent to kill it.
"""

from __future__ import annotations

import sys
import time

from eventstore.adapters import NativeAdapter
from warehouse.archive import archive_in_store, archive_lake
from warehouse.lake import LakeConfig, open_lake


def pause() -> None:
    print("paused", flush=True)
    time.sleep(600)  # the parent kills this process (SIGKILL) here


def main(argv: list[str]) -> None:
    step, catalog, data, dsn = argv[:4]
    con = open_lake(LakeConfig("postgres", catalog, data))
    if step == "lake":
        archive_lake(con, "0s", before_commit=pause)
    else:
        with NativeAdapter(dsn) as adapter:
            archive_in_store(con, adapter, before_commit=pause)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
