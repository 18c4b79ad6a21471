"""The analyst sandbox of `sql` and `shell`: each escape is refused with no effect, the analyst's work still runs."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from benchmarks._lake_data import bulk_append
from eventstore.connection import connect
from eventstore.duckdb_connections import bundled_extension_path
from tests.pipelines.test_lake_cli import run


@pytest.fixture()
def lake(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 300, transactions=2)
    code, output = run("ingest", home=tmp_path, env=env)
    assert code == 0, output
    return tmp_path, env


def _escapes(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    store = env["PROJECTIONIST_EVENT_STORE_DSN"]
    lake_target = "ducklake:postgres:" + env["PROJECTIONIST_LAKE"]
    return {
        "copy to a file": f"COPY (SELECT 1 AS a) TO '{tmp_path / 'leak.csv'}'",
        "read any file": "SELECT * FROM read_text('/etc/passwd')",
        "read the server's pg_hba.conf": f"SELECT * FROM read_text('{tmp_path}/postgres/pg_hba.conf')",
        "list files": "SELECT * FROM glob('/etc/*')",
        "write the event store": f"ATTACH '{store}' AS store (TYPE postgres)",
        "attach the lake again writable": f"ATTACH '{lake_target}' AS w",
        "lift the locks": "SET enable_external_access = true",
        "load an extension": "LOAD httpfs",
        # The lake's instance accepts unsigned extension files (eventstore.duckdb_connections): not in the sandbox.
        "load an extension file": f"LOAD '{bundled_extension_path('httpfs')}'",
        "install an extension": "INSTALL httpfs",
        "export the database": f"EXPORT DATABASE '{tmp_path / 'exported'}'",
    }


def _store_tables(store_dsn: str) -> set[str]:
    with connect(store_dsn) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {str(r[0]) for r in rows}


def test_every_escape_through_sql_is_refused_with_no_effect(lake: tuple[Path, dict[str, str]]) -> None:
    tmp_path, env = lake
    before = _store_tables(env["PROJECTIONIST_EVENT_STORE_DSN"])
    for name, query in _escapes(tmp_path, env).items():
        code, output = run("sql", query, home=tmp_path, env=env)
        assert code == 2, (name, output)
        assert "the query was refused" in output and "shell --write" in output, (name, output)
        assert output.count("\n") == 1, f"{name}: one line, no traceback: {output}"
    # A chain in one call: leave the lake, attach it again writable, write to it.
    chained = f"USE memory; DETACH lake; ATTACH 'ducklake:postgres:{env['PROJECTIONIST_LAKE']}' AS lake"
    code, output = run("sql", chained, home=tmp_path, env=env)
    assert code == 2 and "refused" in output, output
    assert not (tmp_path / "leak.csv").exists() and not (tmp_path / "exported").exists()
    assert _store_tables(env["PROJECTIONIST_EVENT_STORE_DSN"]) == before


def test_every_escape_through_shell_is_refused(lake: tuple[Path, dict[str, str]]) -> None:
    tmp_path, env = lake
    escapes = _escapes(tmp_path, env)
    script = "".join(f"{query};\n" for query in escapes.values()) + "SELECT count(*) AS events FROM raw.events;\n"
    code, output = run("shell", home=tmp_path, env=env, stdin=script)
    assert code == 1, output  # failed statements make a non-interactive shell exit 1
    assert output.count("the query was refused") == len(escapes), output
    assert "300" in output, "the analyst's own query after the refusals still runs"
    assert not (tmp_path / "leak.csv").exists()


def test_what_an_analyst_needs_still_runs(lake: tuple[Path, dict[str, str]]) -> None:
    tmp_path, env = lake
    for query in (
        "SELECT count(*) FROM raw.events",
        "SELECT count(*) FROM lake.meta.checkpoints",
        "SELECT count(*) FROM raw.events AT (VERSION => 1)",
        "EXPLAIN SELECT count(*) FROM raw.events",
        "CREATE TABLE memory.main.mine AS SELECT 1 AS a; SELECT * FROM memory.main.mine",
        "SELECT count(*) FROM ducklake_snapshots('lake')",
    ):
        code, output = run("sql", query, home=tmp_path, env=env)
        assert code == 0, (query, output)
    code, output = run("sql", "SELECT count(*) AS n FROM raw.events", "--json", home=tmp_path, env=env)
    assert code == 0 and json.loads(output) == [{"n": 300}]


def test_the_catalog_connection_cannot_write_either(lake: tuple[Path, dict[str, str]]) -> None:
    # DuckDB's locks do not cover postgres_execute on DuckLake's metadata database: the session reaches
    # the catalog as the read-only role projectionist_analyst, so PostgreSQL refuses instead.
    tmp_path, env = lake
    for escape in (
        "CALL postgres_execute('__ducklake_metadata_lake', 'COMMIT; CREATE TABLE pwned (a int)')",
        "CALL postgres_execute('__ducklake_metadata_lake', 'COMMIT; DELETE FROM ducklake_snapshot')",
        "SELECT * FROM postgres_query('__ducklake_metadata_lake', 'SELECT pg_read_file(''pg_hba.conf'')')",
    ):
        code, output = run("sql", escape, home=tmp_path, env=env)
        assert code == 2 and "permission denied" in output, (escape, output)
    with connect(env["PROJECTIONIST_LAKE"]) as conn:
        created = conn.execute("SELECT to_regclass('public.pwned') IS NOT NULL").fetchone()
        snapshots = conn.execute("SELECT count(*) FROM ducklake_snapshot").fetchone()
    assert created == (False,) and snapshots is not None and snapshots[0] > 0
    code, output = run("sql", "SELECT current_setting('lock_configuration')", home=tmp_path, env=env)
    assert code == 0 and "True" in output


def _documented_commands() -> list[tuple[str, list[str], str | None]]:
    """Every `projectionist sql` / `shell` line of the README and docs: (where, arguments, stdin)."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            if not line.startswith("$ ") or not re.search(r"projectionist (sql|shell)\b", line):
                continue
            where = f"{doc.name}:{number}"
            if "| " in line:  # echo "..." | uv run projectionist shell
                piped, command = line[2:].split("| ", 1)
                found.append((where, shlex.split(command)[-1:], shlex.split(piped)[1] + "\n"))
            else:
                words = shlex.split(line[2:])
                found.append((where, words[words.index("projectionist") + 1 :], None))
    return found


def test_the_docs_queries_run_under_the_sandbox(fresh_database: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    code, output = run("demo", "--events", "400", home=tmp_path, env=env)
    assert code == 0, output
    commands = _documented_commands()
    assert len(commands) >= 7
    for where, arguments, stdin in commands:
        code, output = run(*arguments, home=tmp_path, env=env, stdin=stdin)
        if "COPY" in arguments[1 if arguments[0] == "sql" else 0]:
            assert code == 2 and "This session is read-only" in output, (where, output)
        else:
            assert code == 0 and "error" not in output, (where, output)


def test_an_analyst_scope_reaches_only_its_schemas(lake: tuple[Path, dict[str, str]]) -> None:
    """PROJECTIONIST_ANALYST_SCHEMAS: raw (private fields) and files are refused; the analytics views answer."""
    home, env = lake
    scoped = {**env, "PROJECTIONIST_ANALYST_SCHEMAS": "analytics,public"}
    code, output = run("sql", "--csv", "SELECT count(*) FROM analytics.events_cart_opened", home=home, env=scoped)
    assert code == 0 and int(output.splitlines()[-1]) > 0, output
    for query, refusal in (
        ("SELECT data FROM raw.events", "raw.events is outside this session's schemas (analytics, public"),
        ("SELECT 1 FROM analytics.stream_stats WHERE 1 IN (SELECT 1 FROM lake.archive.events)", "archive.events is"),
        ("FROM read_parquet('x.parquet')", "may not call table functions (read_parquet)"),
        ("SELECT * FROM (PIVOT raw.events ON event_type USING count(*))", "may only run SELECT statements"),
        ("SELECT * FROM events", "events is outside"),
    ):
        code, output = run("sql", query, home=home, env=scoped)
        assert code == 2 and refusal in output, (query, output)
    code, output = run("sql", "WITH t AS (SELECT 41 AS x) SELECT x + 1 FROM t", home=home, env=scoped)
    assert code == 0 and "42" in output, output
    code, output = run("sql", "SELECT 1", home=home, env={**env, "PROJECTIONIST_ANALYST_SCHEMAS": "raw;drop"})
    assert code == 2 and "must list schema names" in output, output
