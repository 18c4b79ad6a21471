"""CLI conventions operators expect: --version, --json listings, SQL from stdin or a file, dry runs, a
confirmation before dropping what rollback needs, and "unknown projection" with a suggestion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks._lake_data import bulk_append
from tests.pipelines.test_lake_cli import run


@pytest.fixture()
def demo(fresh_database: str, tmp_path: Path, lake_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A lake after `demo`: cart_summary v1 live, v2 built and compared with it."""
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    code, output = run("demo", "--events", "400", home=tmp_path, env=env)
    assert code == 0, output
    return tmp_path, env


def _states(home: Path, env: dict[str, str]) -> dict[int, str]:
    code, output = run("versions", "cart_summary", "--json", home=home, env=env)
    assert code == 0, output
    return {v["version"]: v["state"] for v in json.loads(output)}


def test_version(tmp_path: Path) -> None:
    code, output = run("--version", home=tmp_path, env={})
    assert code == 0 and output.startswith("projectionist 0.") and "(DuckDB 1." in output


def test_json_listings(demo: tuple[Path, dict[str, str]]) -> None:
    home, env = demo
    code, output = run("status", "--json", home=home, env=env)
    assert code == 0, output
    status = json.loads(output)
    assert status["event_store"]["events"] == status["lake"]["events"] > 0
    assert status["lake"]["lag_events"] == 0 and status["event_store"]["safe_head"]["bound_kind"] == "transaction_id"
    assert {p["projection"] for p in status["projections"]} >= {"cart_summary", "daily_revenue"}
    code, output = run("versions", "--json", home=home, env=env)
    versions = json.loads(output)
    assert {(v["projection"], v["version"], v["state"]) for v in versions} >= {
        ("cart_summary", 1, "live"),
        ("cart_summary", 2, "ready"),
    }
    assert all(v["lag_events"] == 0 for v in versions)


def test_sql_from_stdin_a_file_or_with_a_leading_comment(demo: tuple[Path, dict[str, str]]) -> None:
    home, env = demo
    query = "SELECT count(*) AS n FROM raw.events"
    _, expected = run("sql", query, "--json", home=home, env=env)
    code, output = run("sql", "-", "--json", home=home, env=env, stdin=query)
    assert code == 0 and output == expected, output
    script = home / "query.sql"
    script.write_text(f"-- how many events\n{query};\n")
    code, output = run("sql", "-f", str(script), "--json", home=home, env=env)
    assert code == 0 and output == expected, output
    code, output = run("sql", f"-- how many events\n{query}", "--json", home=home, env=env)
    assert code == 0 and output == expected, output
    code, output = run("sql", home=home, env=env)
    assert code == 2 and "exactly one of them" in output
    code, output = run("shell", home=home, env=env, stdin=query)  # no ';' at the end: it still runs
    assert code == 0 and json.loads(expected)[0]["n"] == int(output.split("\n")[2].strip()), output


def test_unknown_projection_suggests_the_close_name(demo: tuple[Path, dict[str, str]]) -> None:
    home, env = demo
    for command in (["rollback", "cart_sumary"], ["retain", "cart_sumary", "--keep", "1"], ["versions", "cart_sumary"]):
        code, output = run(*command, home=home, env=env)
        assert code == 2, (command, output)
        assert "unknown projection 'cart_sumary' (did you mean 'cart_summary'?)" in output, (command, output)


def test_dry_runs_change_nothing_and_dropping_the_rollback_target_needs_yes(
    demo: tuple[Path, dict[str, str]],
) -> None:
    home, env = demo
    code, output = run("promote", "cart_summary", "2", "--dry-run", home=home, env=env)
    assert code == 0 and "dry run: cart_summary v2 would become live (was v1)" in output, output
    assert _states(home, env) == {1: "live", 2: "ready"}
    code, output = run("promote", "cart_summary", "2", "--keep", "0", home=home, env=env)
    assert code == 2 and "would drop v1" in output and "--yes" in output, output
    assert _states(home, env) == {1: "live", 2: "ready"}, "refused before anything was promoted"

    assert run("promote", "cart_summary", "2", home=home, env=env)[0] == 0
    code, output = run("rollback", "cart_summary", "--dry-run", home=home, env=env)
    assert code == 0 and "dry run: cart_summary v1 would be live again (v2 retired)" in output, output
    assert _states(home, env) == {1: "retired", 2: "live"}
    code, output = run("retain", "cart_summary", "--keep", "0", "--dry-run", home=home, env=env)
    assert code == 0 and "dry run: would drop v1; nothing was dropped" in output, output
    code, output = run("retain", "cart_summary", "--keep", "0", home=home, env=env)
    assert code == 2 and "would drop v1, the version `projectionist rollback cart_summary` restores" in output
    assert _states(home, env) == {1: "retired", 2: "live"}
    code, output = run("retain", "cart_summary", "--keep", "0", "--yes", home=home, env=env)
    assert code == 0 and "dropped v1" in output, output
    assert _states(home, env) == {1: "dropped", 2: "live"}


def test_dry_runs_of_ingest_project_rebuild_and_compact_change_nothing(
    demo: tuple[Path, dict[str, str]], store_dsn: str
) -> None:
    home, env = demo
    env = {**env}
    more = bulk_append(env["PROJECTIONIST_EVENT_STORE_DSN"], 120, transactions=2, seed=9)

    def snapshot() -> tuple[object, ...]:
        code, output = run(
            "sql", "SELECT max(snapshot_id) FROM ducklake_snapshots('lake')", "--json", home=home, env=env
        )
        assert code == 0, output
        return tuple(json.loads(output)[0].values())

    before = snapshot()
    code, output = run("ingest", "--dry-run", "--batch-size", "100", home=home, env=env)
    assert code == 0 and f"dry run: {more:,} events of native:public.events are not in the lake yet" in output, output
    assert "about 2 commit(s); nothing was ingested" in output
    code, output = run("project", "--dry-run", home=home, env=env)
    assert code == 0 and "dry run: cart_summary v1 (live) is up to date" in output, output
    code, output = run(
        "rebuild", "cart_summary", "--version", "2", "--chunk-events", "150", "--dry-run", home=home, env=env
    )
    assert (
        code == 0 and "would be built from 400 events" in output.replace(",", "")
    ) or "chunk(s) of at most 150" in output
    assert "nothing was built" in output, output
    code, output = run("compact", "--dry-run", home=home, env=env)
    assert code == 0 and "dry run: raw.events has" in output, output
    assert snapshot() == before, "a dry run committed nothing to the lake"
    code, output = run("ingest", home=home, env=env)
    assert code == 0 and f"ingested {more:,} events" in output
    code, output = run("project", "--dry-run", "cart_summary", home=home, env=env)
    assert code == 0 and "cart_summary v1 (live) would advance over" in output, output
