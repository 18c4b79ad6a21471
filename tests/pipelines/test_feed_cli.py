"""``projectionist feed`` and ``deliver`` against a real webhook receiver: failures, timeouts, kill -9, replays."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner

from benchmarks._lake_data import bulk_append
from pipelines.cli import cli
from pipelines.definitions import defs
from tests.pipelines.conftest import cli_process, resource_for
from warehouse.lake import LakeConfig, open_lake

SECRET = "s3cret-for-the-test"


class Receiver:
    """A webhook receiver on 127.0.0.1: records every batch whose signature checks; fails and stalls on demand."""

    def __init__(self) -> None:
        self.batches: list[dict[str, Any]] = []
        self.requests = 0
        self.fail_every = 0  # every n-th request answers 500
        self.stall_on: set[int] = set()  # these requests sleep past the client's timeout (then are recorded)
        self.slow = 0.0  # seconds every request takes
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests += 1
                    n = receiver.requests
                time.sleep(receiver.slow + (1.0 if n in receiver.stall_on else 0.0))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                if self.headers["X-Projectionist-Signature"] != expected:
                    self.send_response(401)
                elif receiver.fail_every and n % receiver.fail_every == 0:
                    self.send_response(500)
                else:
                    with receiver.lock:
                        receiver.batches.append(json.loads(body))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def changes(self) -> list[dict[str, Any]]:
        with self.lock:
            return [c for b in self.batches for c in b["changes"]]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    thread = threading.Thread(target=rec.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def lake(env: dict[str, str]) -> duckdb.DuckDBPyConnection:
    return open_lake(LakeConfig("postgres", env["PROJECTIONIST_LAKE"], env["PROJECTIONIST_LAKE_DATA"] + "/"))


def test_webhook_delivery_survives_failures_timeouts_and_kill_9(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str], receiver: Receiver
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn, "HOOK_SECRET": SECRET}
    bulk_append(store_dsn, 600, transactions=3)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    assert run("project", "cart_summary", home=tmp_path, env=env)[0] == 0
    code, output = run("feed", "add", "hook", "--kind", "webhook", "--source", "cart_sumary", "--target",
                       receiver.url, "--secret-env", "HOOK_SECRET", home=tmp_path, env=env)  # fmt: skip
    assert code == 2 and "unknown projection 'cart_sumary' (did you mean 'cart_summary'" in output, output
    code, output = run("feed", "add", "hook", "--kind", "webhook", "--source", "cart_summary", "--target",
                       receiver.url, "--secret-env", "NO_SUCH_VAR", home=tmp_path, env=env)  # fmt: skip
    assert code == 2 and "NO_SUCH_VAR (the webhook's signing secret) is not set" in output, output
    code, output = run("feed", "add", "hook", "--kind", "webhook", "--source", "cart_summary", "--target",
                       receiver.url, "--secret-env", "HOOK_SECRET", "--batch-size", "25", "--attempts", "4",
                       "--timeout", "0.5", home=tmp_path, env=env)  # fmt: skip
    assert code == 0 and "feed consumer hook: webhook of cart_summary" in output, output
    drop = tmp_path / "drops"
    code, output = run("feed", "add", "drop", "--kind", "parquet", "--source", "cart_summary", "--target",
                       str(drop), "--batch-size", "100", home=tmp_path, env=env)  # fmt: skip
    assert code == 0, output
    con = lake(env)
    rows = dict(con.execute("SELECT cart_id, total_amount FROM analytics.cart_summary").fetchall())
    con.close()
    code, output = run("deliver", "--consumer", "hook", "--dry-run", home=tmp_path, env=env)
    assert code == 0 and f"would receive {len(rows):,} inserts" in output and receiver.requests == 0, output

    # kill -9 mid-pass: the receiver is slow, the process dies after it has accepted a batch or two.
    receiver.slow = 0.3
    proc = cli_process(["deliver", "--consumer", "hook"], tmp_path, env)
    deadline = time.monotonic() + 60
    while len(receiver.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    accepted = len(receiver.changes())
    assert 0 < accepted < len(rows), "killed mid-pass"

    # The rerun meets failures (every third request) and a timeout; it resends the pass from the cursor.
    receiver.slow, receiver.fail_every = 0.0, 3
    receiver.stall_on = {receiver.requests + 2}
    code, output = run("deliver", home=tmp_path, env=env)
    assert code == 0 and f"hook (webhook of cart_summary): {len(rows):,} inserts in " in output, output
    assert "dead-lettered" not in output
    received = receiver.changes()
    keys = {c["idempotency_key"] for c in received}
    assert len(keys) == len(rows) and {c["key"]["cart_id"] for c in received} == set(rows)
    for key in keys:  # duplicates only as the same change, with the same idempotency key
        assert len({json.dumps(c, sort_keys=True) for c in received if c["idempotency_key"] == key}) == 1
    assert len(received) > len(rows), "the killed pass's batches came again"
    assert all(c["source"]["checkpoint"] and c["source"]["last_global_position"] for c in received)
    files = sorted(p.name for p in (drop / "drop").iterdir())
    assert files[-1].endswith(".manifest.json") and len(files) == 1 + -(-len(rows) // 100)
    dropped = duckdb.sql(f"SELECT count(*) FROM '{drop}/drop/*.parquet'").fetchone()
    assert dropped == (len(rows),)

    # New events: only the keys whose content changed, in order per key (the last message per key is the row).
    bulk_append(store_dsn, 200, transactions=1, seed=9)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    assert run("project", "cart_summary", home=tmp_path, env=env)[0] == 0
    before = len(received)
    code, output = run("deliver", "--consumer", "hook", home=tmp_path, env=env)
    assert code == 0, output
    con = lake(env)
    now = dict(con.execute("SELECT cart_id, total_amount FROM analytics.cart_summary").fetchall())
    con.close()
    fresh = receiver.changes()[before:]
    changed = {cart for cart in now if rows.get(cart) != now[cart]}
    assert changed and changed <= {c["key"]["cart_id"] for c in fresh}
    last: dict[str, Any] = {}
    for change in receiver.changes():
        last[change["key"]["cart_id"]] = change["row"]["total_amount"]
    assert {cart: float(amount) for cart, amount in now.items()} == {c: float(a) for c, a in last.items()}

    # A rebuild of the live version with unchanged logic sends nothing.
    requests = receiver.requests
    assert run("rebuild", "cart_summary", "--version", "2", home=tmp_path, env=env)[0] == 0
    code, output = run("deliver", home=tmp_path, env=env)
    assert code == 0 and "hook (webhook of cart_summary): no changes" in output and receiver.requests == requests

    code, output = run("feed", "--json", home=tmp_path, env=env)
    listed = {c["name"]: c for c in json.loads(output)}
    assert listed["hook"]["lag_events"] == 0 and listed["hook"]["dead_letters"] == []
    assert listed["hook"]["delivered"] >= len(rows) and SECRET not in output
    code, output = run("feed", "reset", "hook", "--beginning", home=tmp_path, env=env)
    assert code == 2 and "confirm with --yes" in output
    code, output = run("feed", "reset", "hook", "--beginning", "--yes", home=tmp_path, env=env)
    assert code == 0 and "feed consumer hook reset to snapshot 0" in output, output

    # Dagster: the sensor sees the reset consumer behind; the job sends it every row again.
    resource = resource_for(store_dsn, lake_env, tmp_path)
    sensor = defs.resolve_sensor_def("feed_consumers_behind")
    with dg.build_sensor_context(resources={"projectionist": resource}) as context:
        tick = sensor(context)
    assert isinstance(tick, dg.SensorResult) and len(tick.run_requests or []) == 1
    before = len(receiver.changes())
    receiver.fail_every = 0
    job = defs.resolve_job_def("deliver_feeds")
    with _env(env):
        assert job.execute_in_process(resources={"projectionist": resource}).success
    assert {c["key"]["cart_id"] for c in receiver.changes()[before:]} == set(now)
    with dg.build_sensor_context(cursor=tick.cursor, resources={"projectionist": resource}) as context:
        assert not sensor(context).run_requests
