"""Whole commands as users time them, each beside the same work done by hand in a bare DuckDB process.

Every figure is a whole process (start, imports, connections, work, exit), wall time, best of
``--repeat`` rounds, the rounds interleaved so that both sides of a row see the same machine:

- ``projectionist ingest`` (into a fresh lake each round) vs one ``python -c`` DuckDB process that
  ``ATTACH``es the store ``(TYPE postgres)`` and runs ``COPY (SELECT * FROM pg.public.events) TO 'x.parquet'``;
- ``projectionist rebuild cart_summary --version 1`` vs the same aggregation (the projection's own SQL,
  ``projections/shop/cart_summary_v1.py``) over that Parquet file in a bare DuckDB process, written to
  Parquet; both give the same number of rows (checked);
- ``projectionist sql "select count(*) from raw.events"`` vs a bare DuckDB count over the Parquet file;
- ``projectionist --help`` vs ``python -c pass`` (the interpreter alone), and ``projectionist status``.

Python's bytecode is cached (``PYTHONPYCACHEPREFIX`` under the home; ``PYTHONDONTWRITEBYTECODE`` dropped),
as after an install: without it every process compiles the ~300 modules it imports, seconds on a busy
host. The store is the demo shop (``projectionist demo --no-ingest --events N --seed S``) in an embedded
PostgreSQL under a new home in /tmp, stopped (``projectionist --home H down``) and removed at the end.
``--before DIR`` also runs every projectionist command from another checkout's source (e.g. ``git archive
main`` unpacked in DIR) with this environment, in the same rounds: a before/after in one run.

Run: ``uv run python benchmarks/whole_commands.py [--events 1200000] [--repeat 3] [--before DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eventstore.connection import EmbeddedServer, ensure_database  # noqa: E402
from eventstore.duckdb_connections import bundled_extension_path  # noqa: E402
from eventstore.quoting import quote_literal  # noqa: E402
from projections.definition import Sql  # noqa: E402
from projections.shop.cart_summary_v1 import PROJECTION  # noqa: E402

_BARE_COPY = """
import duckdb
con = duckdb.connect()
con.execute({load!r})
con.execute({attach!r})
con.execute({copy!r})
"""

_BARE_QUERY = """
import duckdb
con = duckdb.connect()
{statement}
"""


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of ``command`` as a process of its own, and its output; a failure stops the benchmark.

    It runs in the home: ``python -m`` puts its working directory first on ``sys.path``, which would
    otherwise pick this checkout's source over ``PYTHONPATH`` (``--before``).
    """
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=env["PROJECTIONIST_HOME"])
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({done.returncode}): {done.stdout}{done.stderr}")
    return seconds, done.stdout


def _bare(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=1_200_000, help="demo shop events in the store")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best of each side is shown")
    parser.add_argument(
        "--before", type=Path, help="also run projectionist from this source tree (same environment), same rounds"
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="whole-commands-", dir="/tmp"))
    # Bytecode cached, as after any install: the first round writes it (under the home), the best round reads it.
    base_env = {**os.environ, "PROJECTIONIST_HOME": str(home), "PYTHONPYCACHEPREFIX": str(home / "pycache")}
    base_env.pop("PROJECTIONIST_EVENT_STORE_DSN", None)
    base_env.pop("PYTHONDONTWRITEBYTECODE", None)
    sides = {"now": {**base_env, "PYTHONPATH": str(ROOT)}}
    if args.before is not None:
        sides["before"] = {**base_env, "PYTHONPATH": str(args.before.resolve())}
    cli = [sys.executable, "-m", "pipelines.cli"]
    try:
        _timed([*cli, "demo", "--no-ingest", "--events", str(args.events), "--seed", str(args.seed)], sides["now"])
        server = EmbeddedServer(home).start()
        store = ensure_database(server, "projectionist_events")
        parquet = str(home / "events.parquet")
        postgres = bundled_extension_path("postgres")
        load = f"LOAD {quote_literal(str(postgres))}" if postgres else "LOAD postgres"
        attach = f"ATTACH {quote_literal(store)} AS pg (TYPE postgres, READ_ONLY)"
        copy = f"COPY (SELECT * FROM pg.public.events) TO {quote_literal(parquet)}"
        assert isinstance(PROJECTION.body, Sql)
        summary = str(home / "cart_summary.parquet")
        events_view = f"CREATE VIEW events AS SELECT * FROM {quote_literal(parquet)}"
        query = f"COPY ({PROJECTION.body.query}) TO {quote_literal(summary)}"
        aggregation = f"con.execute({events_view!r})\ncon.execute({query!r})"
        count = f"print(con.sql({f'SELECT count(*) FROM {quote_literal(parquet)}'!r}).fetchone()[0])"
        peers = {
            "ingest": _BARE_COPY.format(load=load, attach=attach, copy=copy),
            "rebuild": _BARE_QUERY.format(statement=aggregation),
            "sql": _BARE_QUERY.format(statement=count),
            "help": "pass",
        }
        commands = {
            "ingest": ["ingest"],
            "rebuild": ["rebuild", "cart_summary", "--version", "1"],
            "sql": ["sql", "select count(*) from raw.events", "--csv"],
            "help": ["--help"],
            "status": ["status"],
        }

        def lake_env(side: str, round_: int) -> dict[str, str]:
            return {
                **sides[side],
                "PROJECTIONIST_LAKE": ensure_database(server, f"whole_commands_{side}_{round_}"),
                "PROJECTIONIST_LAKE_DATA": str(home / f"lake-{side}-{round_}"),
            }

        best: dict[tuple[str, str], float] = {}
        outputs: dict[tuple[str, str], str] = {}
        for round_ in range(args.repeat):
            envs = {side: lake_env(side, round_) for side in sides}  # fresh lakes: each round ingests the store
            for what, command in commands.items():
                runs: list[tuple[str, list[str], dict[str, str]]] = [
                    (side, [*cli, *command], env) for side, env in envs.items()
                ]
                if what in peers:
                    runs.append(("bare", _bare(peers[what]), base_env))
                for side, argv, env in runs:
                    seconds, output = _timed(argv, env)
                    best[(what, side)] = min(best.get((what, side), float("inf")), seconds)
                    outputs[(what, side)] = output

        last = lake_env("now", args.repeat - 1)
        _, rows = _timed([*cli, "sql", "SELECT count(*) FROM projections.cart_summary_v1", "--csv"], last)
        _, bare_rows = _timed(
            _bare(f"import duckdb; print(duckdb.sql(\"SELECT count(*) FROM '{summary}'\").fetchone()[0])"), base_env
        )
        events = outputs[("sql", "now")].split()[-1]
        if outputs[("sql", "bare")].split()[-1] != events or rows.split()[-1] != bare_rows.split()[-1]:
            raise SystemExit(
                f"the two sides disagree: {events} vs {outputs[('sql', 'bare')].split()[-1]} events, "
                f"{rows.split()[-1]} vs {bare_rows.split()[-1]} carts"
            )
        print(
            f"{int(events):,} events, {int(rows.split()[-1]):,} carts; {os.cpu_count()} cores, load average "
            f"{os.getloadavg()[0]:.1f}; best of {args.repeat} rounds, whole processes"
            + (f"; before = projectionist from {args.before}" if args.before else "")
        )
        before = "before" in sides
        header = f"{'what the user runs':<40}" + (f" {'before':>9} {'ratio':>6}" if before else "")
        print(header + f" {'now':>9} {'ratio':>6} {'bare DuckDB':>12}")
        labels = {
            "ingest": "ingest | ATTACH + COPY TO parquet",
            "rebuild": "rebuild cart_summary v1 | SQL over parquet",
            "sql": "sql count(*) | count(*) over parquet",
            "help": "--help | python -c pass",
            "status": "status",
        }
        for what, label in labels.items():
            peer = best.get((what, "bare"))
            line = f"{label:<40.40}"
            for side in ("before", "now") if before else ("now",):
                ratio = f"{peer / best[(what, side)]:>5.2f}x" if peer else f"{'':>6}"
                line += f" {best[(what, side)]:>7.2f} s {ratio}"
            print(line + (f" {peer:>10.2f} s" if peer else ""))
    finally:
        subprocess.run([*cli, "--home", str(home), "down"], env=base_env, capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
