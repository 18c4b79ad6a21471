"""How long `projectionist ui` takes to serve, and a run with nothing to do, beside bare `dagster dev`.

Measured as an operator sees it, in one process run, each side started as its own process group on
a free 127.0.0.1 port and stopped by its PID:

- ``projectionist ui``: the CLI command, on the demo's home (``$PROJECTIONIST_HOME``, made by
  ``projectionist demo`` if missing) with a fresh Dagster instance (``home/dagster`` removed first):
  seconds until the webserver answers, until the code location is loaded, and then the wall time
  of ``ingest_and_project`` runs launched over GraphQL on an idle store (launch → SUCCESS), twice;
- ``bare dagster dev`` (the limit): `dagster dev` of a one-asset definitions file that imports only
  Dagster, with a fresh instance of the same dagster.yaml, and one run of its one-op job, timed the same way.

Also lists every line of the UI's output that says "warning" (there should be none).

Run: ``PROJECTIONIST_HOME=/tmp/ui-home uv run python benchmarks/ui_startup.py [--runs 2]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.ui import free_port  # noqa: E402
from tests.pipelines.dagster_harness import DagsterWeb  # noqa: E402

_BARE = """
import dagster as dg


@dg.asset
def one() -> int:
    return 1


defs = dg.Definitions(assets=[one], jobs=[dg.define_asset_job("bare", selection="one")])
"""


def _serving(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not serve in time")


def _measure(
    label: str, start: Callable[[int, Path], subprocess.Popen[bytes]], job: str, runs: int, log: Path
) -> tuple[float, float, list[float]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    process = start(port, log)
    try:
        _serving(url, started + 300)
        serving = time.monotonic() - started
        web = DagsterWeb(url)
        location = web.wait_until_loaded(300, log)
        loaded = time.monotonic() - started
        seconds = []
        for _ in range(runs):
            t0 = time.monotonic()
            run_id = web.launch(location, job, {})
            status = web.wait_for_run(run_id, 600)
            seconds.append(time.monotonic() - t0)
            if status != "SUCCESS":
                raise SystemExit(f"{label}: run {run_id} ended {status}: {web.run_messages(run_id)[-5:]}")
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return serving, loaded, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=2, help="idle runs of each job (default 2)")
    args = parser.parse_args()
    home = Path(os.environ.get("PROJECTIONIST_HOME", ".projectionist")).resolve()
    env = {**os.environ, "PROJECTIONIST_HOME": str(home)}
    cli = [sys.executable, "-m", "pipelines.cli"]
    if not (home / "lake").exists():
        subprocess.run([*cli, "demo"], env=env, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(home / "dagster", ignore_errors=True)  # a fresh Dagster instance, as on a new home

    def ui(port: int, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as out:
            return subprocess.Popen(
                [*cli, "ui", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    scratch = Path(tempfile.mkdtemp(prefix="ui-bench-"))
    try:
        (scratch / "bare.py").write_text(_BARE)
        (scratch / "dagster").mkdir()
        shutil.copyfile(ROOT / "dagster.yaml", scratch / "dagster" / "dagster.yaml")  # the same instance settings

        def bare(port: int, log: Path) -> subprocess.Popen[bytes]:
            with open(log, "wb") as out:
                return subprocess.Popen(
                    [sys.executable, "-m", "dagster", "dev", "-f", "bare.py", "-h", "127.0.0.1", "-p", str(port)],
                    cwd=scratch,
                    env={**os.environ, "DAGSTER_HOME": str(scratch / "dagster")},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        ours = _measure("projectionist ui", ui, "ingest_and_project", args.runs, scratch / "ui.log")
        limit = _measure("bare dagster dev", bare, "bare", args.runs, scratch / "bare.log")
        warnings = [
            line for line in (scratch / "ui.log").read_text().splitlines() if re.search("warn", line, re.IGNORECASE)
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'':32} {'projectionist ui':>18} {'bare dagster dev':>18} {'ratio':>8}")
    rows = [("serves (s)", ours[0], limit[0]), ("code location loaded (s)", ours[1], limit[1])]
    rows += [
        (f"idle run {i + 1}, launch to SUCCESS (s)", a, b)
        for i, (a, b) in enumerate(zip(ours[2], limit[2], strict=True))
    ]
    for name, a, b in rows:
        print(f"{name:32} {a:18.1f} {b:18.1f} {a / b:7.2f}x")
    print(f"warnings in the UI's output: {len(warnings)}")
    for line in warnings:
        print(f"  {line}")


if __name__ == "__main__":
    main()
