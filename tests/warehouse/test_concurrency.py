"""Readers in other processes while ingest writes, and ingest killed with SIGKILL at random instants."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eventstore.adapters import NativeAdapter
from tests.warehouse.conftest import append_shop, store_ids
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource

ROOT = Path(__file__).resolve().parents[2]


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.warehouse._lake_proc", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_reader_process_sees_only_committed_batch_boundaries(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, tmp_path: Path
) -> None:
    appended = append_shop(store_dsn, 4_000)
    batch = 250
    open_lake(lake_config).close()
    stop = tmp_path / "stop"
    reader = child("reader", lake_config.catalog, lake_config.data_path, str(stop))
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    con = open_lake(lake_config)
    result = ingest(con, source, batch_size=batch, compact_after=None)
    time.sleep(0.5)  # let the reader see the final state too
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert result.events == appended
    seen = [tuple(int(x) for x in line.split()) for line in out.splitlines()]
    assert seen, "the reader ran no query"
    boundaries = {min(appended, k * batch) for k in range(appended // batch + 2)}
    for rows, checkpoint_events in seen:
        assert rows == checkpoint_events  # rows and checkpoint come from one snapshot: same commit
        assert rows in boundaries
    assert seen[-1][0] == appended
    assert "lock" not in err.lower()


@pytest.mark.slow
def test_ingest_killed_at_random_instants_then_rerun_equals_the_store(
    lake_config: LakeConfig, store_dsn: str, full_size: bool
) -> None:
    append_shop(store_dsn, 60_000 if full_size else 15_000)
    kills = 12 if full_size else 3
    rng = random.Random(20261126)
    open_lake(lake_config).close()
    killed = 0
    for _ in range(kills):
        proc = child("ingest", lake_config.catalog, lake_config.data_path, store_dsn, "500")
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=60)
    assert killed >= 1
    with NativeAdapter(store_dsn) as reader:
        con = open_lake(lake_config)
        ingest(con, StoreSource(reader), batch_size=500)
    rows = con.execute("SELECT event_id FROM raw.events ORDER BY transaction_id, global_position").fetchall()
    assert [str(r[0]) for r in rows] == store_ids(store_dsn)  # none lost, none twice, in order
    assert con.execute("SELECT events FROM meta.checkpoints WHERE consumer = 'ingest'").fetchone() == (len(rows),)
