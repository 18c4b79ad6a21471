"""``projectionist archive``: the lake's cold tier, then the store, with --dry-run, --yes, --json and bad input."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from benchmarks._lake_data import bulk_append
from eventstore.connection import connect
from pipelines.cli import cli


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def store_count(dsn: str, table: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_archive_in_the_lake_then_in_the_store(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 100, transactions=2)  # 20 carts, all finished, recorded in January 2026
    assert run("ingest", home=tmp_path, env=env)[0] == 0

    for bad, message in (
        (["--older-than", "7 days"], "--older-than '7 days' is not a duration"),
        (["--delete"], "--delete applies to --in-store only"),
        (["--in-store"], "archive --in-store changes the event store: see what it would change with --dry-run"),
    ):
        code, output = run("archive", *bad, home=tmp_path, env=env)
        assert code == 2 and message in output, output
    code, output = run("archive", "--in-store", "--dry-run", home=tmp_path, env=env)
    assert code == 0 and "nothing to archive in the store" in output, output

    code, output = run("archive", "--older-than", "0s", "--dry-run", home=tmp_path, env=env)
    assert code == 0 and "dry run: would move 20 finished streams (100 events)" in output, output
    assert "closing: cart: CartCancelled, CartConfirmed" in output
    code, output = run("archive", "--older-than", "0s", "--json", home=tmp_path, env=env)
    assert code == 0, output
    lake = json.loads(output)
    assert (lake["tier"], lake["streams"], lake["events"]) == ("lake", 20, 100)

    code, output = run("archive", "--in-store", "--dry-run", home=tmp_path, env=env)
    assert code == 0, output
    assert "dry run: would archive 20 streams (100 events, native: moved to events_archive)" in output
    assert len([line for line in output.splitlines() if line.startswith("  cart-")]) == 20
    assert store_count(store_dsn, "events") == 100
    code, output = run("archive", "--in-store", "--yes", "--json", home=tmp_path, env=env)
    assert code == 0, output
    store = json.loads(output)
    assert (store["streams"], store["events"], store["action"]) == (20, 100, "moved to events_archive")
    assert (store_count(store_dsn, "events"), store_count(store_dsn, "events_archive")) == (0, 100)
