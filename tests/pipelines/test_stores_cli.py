"""The CLI on foreign stores: ``demo --store`` and ``ingest``/``status`` with PROJECTIONIST_EVENT_STORE_KIND."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from eventstore.adapters.writers import append_demo_shop_store
from eventstore.connection import EmbeddedServer, connect
from pipelines.cli import cli
from tests.warehouse.test_sources import KINDS, append_shop


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_demo_store_writes_through_the_stores_writer_into_its_own_database(
    fresh_database: str, pg_server: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    try:
        code, output = run("demo", "--store", "marten", "--events", "300", home=tmp_path, env=env)
        assert code == 0, output
        assert "through the marten writer into database 'projectionist_demo_marten'" in output
        appended = int(output.split("appended ")[1].split(" events")[0].replace(",", ""))
        assert f"ingested {appended:,} events in 1 commit " in output
        assert "lake checkpoint 0/" in output  # Marten's checkpoints are (0, seq_id)
        assert "cart_opened" in output and "(3 rows)" in output
        code, output = run("demo", "--store", "marten", home=tmp_path, env=env)
        assert code == 0, output
        assert f"already holds {appended:,} events" in output and "nothing to ingest" in output
        code, output = run("demo", "--store", "nosuch", home=tmp_path, env=env)
        assert code == 2 and "'nosuch' is not one of" in output
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "projectionist_demo_marten" WITH (FORCE)')


def test_ingest_and_status_follow_the_store_kind(fresh_database: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    appended = append_demo_shop_store("eventsourcing", fresh_database, events=200).events
    with connect(fresh_database) as conn:  # one event the library cannot decode either (ciphered bytes)
        conn.execute("UPDATE shop_events SET state = '\\x8f00fe11'::bytea WHERE notification_id = 7")
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    env["PROJECTIONIST_EVENT_STORE_KIND"] = "eventsourcing"
    code, output = run("status", home=tmp_path, env=env)
    assert code == 0, output
    assert "eventsourcing:public.shop_events" in output and f"events:    {appended:,}" in output
    assert f"lag:        {appended:,} events" in output
    code, output = run("ingest", "--batch-size", "80", home=tmp_path, env=env)
    assert code == 0, output
    assert f"ingested {appended:,} events in 3 commits" in output
    assert "1 undecodable event kept in raw.events with data NULL and listed in meta.dead_letters" in output
    code, output = run("status", home=tmp_path, env=env)
    assert code == 0 and "lag:        0 events" in output
    assert f"positions up to {appended}" in output
    code, output = run("sql", "SELECT projection, global_position FROM meta.dead_letters", home=tmp_path, env=env)
    assert code == 0 and "*ingest*" in output and "7" in output
    code, output = run("status", home=tmp_path, env={**env, "PROJECTIONIST_EVENT_STORE_KIND": "marten"})
    assert code == 2 and "mt_events" in output


@pytest.mark.parametrize("kind", KINDS)
def test_follow_follows_the_configured_store_kind(
    kind: str, fresh_database: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    appended = append_shop(kind, fresh_database, events=200)
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database, "PROJECTIONIST_EVENT_STORE_KIND": kind}
    code, output = run("follow", "--max-cycles", "2", "--interval", "0.1", home=tmp_path, env=env)
    assert code == 0, output
    query = "SELECT source, count(*) AS events FROM raw.events GROUP BY source"
    code, output = run("sql", query, "--json", home=tmp_path, env=env)
    assert code == 0, output
    [row] = json.loads(output)
    assert row["source"].startswith(f"{kind}:") and row["events"] == appended


def test_demo_store_queries_its_own_lake_when_no_lake_is_configured(fresh_database: str, pg_server: str) -> None:
    # A regression: the sample queries once read the default lake (never created) instead of the demo's.
    root = Path(tempfile.mkdtemp(prefix="projectionist-demo-store-", dir="/tmp"))  # the server user passes through
    home = root / "home"
    env = {"PROJECTIONIST_EVENT_STORE_DSN": fresh_database, "PROJECTIONIST_LAKE": "", "PROJECTIONIST_LAKE_DATA": ""}
    try:
        code, output = run("demo", "--store", "marten", "--events", "200", home=home, env=env)
        assert code == 0, output
        assert "-- events per type" in output and "cart_opened" in output and "(3 rows)" in output
    finally:
        EmbeddedServer(home).stop()
        shutil.rmtree(root, ignore_errors=True)
        with connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP DATABASE IF EXISTS "projectionist_demo_marten" WITH (FORCE)')
