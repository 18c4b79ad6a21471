"""The lake's commands (ingest, status, sql, shell, attach, demo), in-process, on real PostgreSQL and DuckLake."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from benchmarks._lake_data import bulk_append
from eventstore.duckdb_connections import new_connection
from pipelines.cli import cli


def run(*args: str, home: Path, env: dict[str, str], stdin: str | None = None) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args], input=stdin)
    return result.exit_code, result.output


def test_help_lists_the_lake_commands(tmp_path: Path) -> None:
    output = CliRunner().invoke(cli, ["--help"]).output
    for command in ("ingest", "compact", "sql", "shell", "attach", "up", "down"):
        assert command in output


def test_the_cli_ingests_in_the_ingests_default_batches() -> None:
    """The CLI writes the ingest's default out (its help loads no DuckDB); the two must not drift apart."""
    from pipelines.cli.lake import DEFAULT_BATCH_SIZE
    from warehouse.ingest import DEFAULT_BATCH_SIZE as INGEST_DEFAULT

    option = next(p for p in cli.commands["ingest"].params if p.name == "batch_size")
    assert option.default == DEFAULT_BATCH_SIZE == INGEST_DEFAULT


def test_ingest_status_sql_and_shell(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    appended = bulk_append(store_dsn, 1_000, transactions=3)
    code, output = run("ingest", "--batch-size", "400", home=tmp_path, env=env)
    assert code == 0, output
    assert f"ingested {appended:,} events in 3 commits" in output
    code, output = run("ingest", home=tmp_path, env=env)
    assert code == 0 and "nothing to ingest" in output
    code, output = run("ingest", "--memory-limit", "lots", home=tmp_path, env=env)
    assert code == 2 and "memory limit 'lots'" in output
    more = bulk_append(store_dsn, 500, transactions=2, seed=3)
    code, output = run("status", home=tmp_path, env=env)
    assert code == 0, output
    assert f"({appended:,} events in raw.events" in output
    assert f"lag:        {more:,} events" in output
    assert "raw.events:" in output
    run("ingest", home=tmp_path, env=env)
    code, output = run("status", home=tmp_path, env=env)
    assert "lag:        0 events, 0 s" in output

    query = "SELECT event_type, count(*) AS events FROM raw.all_events GROUP BY 1 ORDER BY 1"
    code, output = run("sql", query, "--json", home=tmp_path, env=env)
    assert code == 0, output
    answer = json.loads(output)
    assert sum(row["events"] for row in answer) == appended + more
    assert answer[0] == {"event_type": "CartCancelled", "events": answer[0]["events"]}
    code, output = run("sql", query, "--csv", home=tmp_path, env=env)
    parsed = list(csv.DictReader(io.StringIO(output)))
    assert [r["event_type"] for r in parsed] == [r["event_type"] for r in answer]
    code, output = run("sql", query, home=tmp_path, env=env)
    assert output.splitlines()[0].split() == ["event_type", "|", "events"]
    assert output.rstrip().endswith(f"({len(answer)} rows)")
    code, output = run("sql", "SELECT * FROM raw.no_such_table", home=tmp_path, env=env)
    assert code == 2 and "the query failed" in output and "no_such_table" in output
    code, output = run("sql", "DELETE FROM raw.events", home=tmp_path, env=env)
    assert code == 2 and "read-only" in output.lower()

    code, output = run(
        "shell", home=tmp_path, env=env, stdin="SELECT count(*) AS n\n  FROM raw.events;\n.tables\n.quit\n"
    )
    assert code == 0, output
    assert (
        f"{appended + more}" in output
        and "(1 row)" in output
        and "analytics" in output
        and "raw.events" not in output.split("(1 row)")[0]
    )


def test_attach_prints_statements_that_attach_the_lake_read_only(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 100, transactions=1)
    run("ingest", home=tmp_path, env=env)
    code, output = run("attach", home=tmp_path, env=env)
    assert code == 0, output
    lines = [line for line in output.splitlines() if line and not line.startswith("--")]
    assert lines[:4] == ["INSTALL ducklake;", "INSTALL postgres;", "LOAD ducklake;", "LOAD postgres;"]
    attach = lines[4]
    assert attach.startswith("ATTACH 'ducklake:postgres:") and attach.endswith("AS lake (READ_ONLY);")
    con = new_connection("ducklake", "postgres")  # the extensions, as INSTALL/LOAD would give them
    con.execute(attach)
    con.execute(lines[5])
    assert con.execute("SELECT count(*) FROM raw.all_events").fetchone() == (100,)


def test_demo_appends_ingests_and_queries(fresh_database: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    code, output = run("demo", "--events", "400", "--writers", "2", home=tmp_path, env=env)
    assert code == 0, output
    appended = int(output.split("appended ")[1].split(" events")[0].replace(",", ""))
    assert f"ingested {appended:,} events in 1 commit " in output
    assert "-- best-selling products (analytics.events_item_added)" in output
    assert "(3 rows)" in output
    assert "cart_summary       1  live" in output and "cart_summary       2  ready" in output
    assert "added column currency VARCHAR" in output and "added column distinct_products BIGINT" in output
    assert "declared changes of cart_summary v2: expectation satisfied" in output
    code, output = run("demo", "--events", "400", home=tmp_path, env=env)
    assert "nothing to ingest" in output


def test_ingest_keeps_the_event_catalog_in_its_batch_commits(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    """One lake commit per batch, the catalog's part in it: no commit of the catalog's own, every event counted once."""
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 300, transactions=3)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    bulk_append(store_dsn, 200, transactions=2)
    code, before = run("sql", "SELECT count(*) FROM ducklake_snapshots('lake')", "--csv", home=tmp_path, env=env)
    assert code == 0, before
    code, output = run("ingest", "--batch-size", "100", "--no-compact", home=tmp_path, env=env)
    assert code == 0 and "ingested 200 events in 2 commits" in output, output
    code, after = run("sql", "SELECT count(*) FROM ducklake_snapshots('lake')", "--csv", home=tmp_path, env=env)
    assert int(after.split()[-1]) - int(before.split()[-1]) == 2, (before, after)
    code, counted = run(
        "sql",
        "SELECT (SELECT sum(events) FROM analytics.event_catalog) = (SELECT count(*) FROM raw.all_events), "
        "(SELECT count(DISTINCT [transaction_id, global_position]) FROM meta.checkpoints "
        "WHERE consumer IN ('ingest', 'event_catalog'))",
        "--csv",
        home=tmp_path,
        env=env,
    )
    assert counted.split()[-1] == "True,1", counted
