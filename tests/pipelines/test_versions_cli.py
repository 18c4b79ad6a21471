"""The projection-version commands on real PostgreSQL and DuckLake: gate, diff, rollback, follow, crashes."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from benchmarks._lake_data import bulk_append
from pipelines.cli import cli
from projections import discover
from tests.pipelines.conftest import cli_process
from warehouse.errors import LakeConfigurationError
from warehouse.lake import LakeConfig, open_lake
from warehouse.versions import rebuild


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def lake_rows(env: dict[str, str], query: str) -> list[tuple[object, ...]]:
    config = LakeConfig("postgres", env["PROJECTIONIST_LAKE"], env["PROJECTIONIST_LAKE_DATA"] + "/")
    con = open_lake(config, read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_gate_diff_promote_rollback_and_status(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 800, transactions=3)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    code, output = run("rebuild", "cart_summary", "--version", "1", home=tmp_path, env=env)
    assert code == 0 and "cart_summary v1 ready" in output, output
    code, output = run("promote", "cart_summary", "2", home=tmp_path, env=env)
    assert code == 2 and "cart_summary v2 is not built" in output, output
    code, output = run("promote", "cart_summary", "1", home=tmp_path, env=env)
    assert code == 0 and "v1 is live (was nothing)" in output, output
    assert run("rebuild", "cart_summary", "--version", "2", home=tmp_path, env=env)[0] == 0
    code, output = run("promote", "cart_summary", "2", home=tmp_path, env=env)
    assert code == 2 and "run `projectionist diff cart_summary 1 2`" in output, output
    code, output = run("rebuild", "nope", "--version", "1", home=tmp_path, env=env)
    assert code == 2 and "unknown projection 'nope'" in output
    code, output = run("rebuild", "cart_summary", "--version", "2", "--chunk-events", "300", home=tmp_path, env=env)
    assert code == 0 and "cart_summary v2 ready: " in output and " events in 3 chunks, checkpoint" in output, output
    code, output = run("diff", "cart_summary", "--sample", "1", "--tolerance", "total_amount", home=tmp_path, env=env)
    assert code == 2 and "COLUMN=NUMBER" in output
    page = tmp_path / "diff.html"
    code, output = run("diff", "cart_summary", "--sample", "1", "--html", str(page), home=tmp_path, env=env)
    assert code == 0, output
    assert "<p class='verdict satisfied'" in page.read_text() and "expectation satisfied" in page.read_text()
    assert "added column currency VARCHAR" in output and "added column distinct_products BIGINT" in output
    assert "expectation satisfied" in output
    assert "trail: 5 event(s)" in output
    code, output = run("promote", "cart_summary", "2", "--keep", "0", home=tmp_path, env=env)
    assert code == 2 and "would drop v1" in output, "dropping what rollback needs takes --yes"
    code, output = run("promote", "cart_summary", "2", "--keep", "0", "--yes", home=tmp_path, env=env)
    assert code == 0 and "v2 is live (was v1) (comparison " in output and "dropped retired versions: v1" in output
    code, output = run("rollback", "cart_summary", home=tmp_path, env=env)
    assert code == 2 and "cart_summary v1 is dropped" in output, output
    assert lake_rows(env, "SELECT count(*) FROM analytics.cart_summary WHERE currency IS NOT NULL")[0][0] > 0
    bulk_append(store_dsn, 200, transactions=1, seed=5)
    code, output = run("status", home=tmp_path, env=env)
    assert code == 0 and "projections:" in output and "cart_summary" in output, output
    code, output = run("project", home=tmp_path, env=env)  # nothing ingested yet: versions are up to date
    assert code == 0, output
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    code, output = run("project", home=tmp_path, env=env)
    assert code == 0 and "cart_summary v2: " in output and "daily_revenue v1" in output, output
    code, output = run("versions", home=tmp_path, env=env)
    assert [line.split()[2] for line in output.splitlines()[1:]] == ["dropped", "live", "live", "live"], output


def test_a_projection_module_with_a_syntax_error_changes_nothing(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    broken = tmp_path / "mine"
    broken.mkdir()
    (broken / "broken_projection.py").write_text("PROJECTION = Projection(\n")
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn, "PROJECTIONIST_PROJECTIONS": str(broken)}
    bulk_append(store_dsn, 200, transactions=1)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    for command in (["project"], ["rebuild", "cart_summary", "--version", "1"], ["promote", "cart_summary", "1"]):
        code, output = run(*command, home=tmp_path, env=env)
        assert code == 2 and "broken_projection.py" in output, output
    assert lake_rows(env, "SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'projections'") == [(0,)]


def _live_view(env: dict[str, str]) -> bool:
    try:
        return bool(
            lake_rows(
                env, "SELECT 1 FROM duckdb_views() WHERE schema_name = 'analytics' AND view_name = 'cart_summary'"
            )
        )
    except LakeConfigurationError:  # the follower has not created the lake yet
        return False


def test_follow_ingests_and_projects_until_sigterm(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 300, transactions=1)
    follower = cli_process(["follow", "--interval", "0.2"], tmp_path, env, merge_stderr=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _live_view(env):
            assert follower.poll() is None, follower.communicate()[0]
            time.sleep(0.3)
        before = lake_rows(env, "SELECT count(*) FROM analytics.cart_summary")[0][0]
        bulk_append(store_dsn, 300, transactions=1, seed=4)
        while (
            time.monotonic() < deadline
            and lake_rows(env, "SELECT count(*) FROM analytics.cart_summary")[0][0] == before
        ):
            time.sleep(0.3)
        follower.send_signal(signal.SIGTERM)
        output, _ = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, output
    assert output.count("ingested") >= 2 and output.rstrip().endswith("stopped"), output
    assert lake_rows(env, "SELECT count(*) FROM analytics.cart_summary")[0][0] > before


@pytest.mark.slow
def test_rebuild_killed_at_a_random_instant_then_rerun_gives_the_same_table(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str], full_size: bool
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 20_000 if full_size else 4_000, transactions=4)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    assert run("rebuild", "cart_summary", "--version", "2", home=tmp_path, env=env)[0] == 0
    query = "SELECT * FROM projections.cart_summary_v2 ORDER BY cart_id"
    reference = lake_rows(env, query)
    rounds = 6 if full_size else 2
    rng = random.Random(7)
    for _ in range(rounds):
        for version in ("2", "1"):
            victim = cli_process(["rebuild", "cart_summary", "--version", version], tmp_path, env, merge_stderr=True)
            assert victim.stdout is not None
            started = victim.stdout.readline()  # printed once the lake is open, before computing
            assert "rebuilding cart_summary" in started, started
            time.sleep(rng.uniform(0.0, 1.5))
            victim.send_signal(signal.SIGKILL)
            output = victim.communicate(timeout=60)[0]
            assert victim.returncode in (0, -signal.SIGKILL), output
        code, output = run("rebuild", "cart_summary", "--version", "2", home=tmp_path, env=env)
        assert code == 0, output
        assert lake_rows(env, query) == reference
    code, output = run("rebuild", "cart_summary", "--version", "1", home=tmp_path, env=env)
    assert code == 0 and "cart_summary v1 ready" in output, output


class _Interrupted(Exception):
    """Stands for a crash after some chunks were committed."""


def test_status_shows_an_unfinished_rebuild_and_rebuild_continues_it(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 800, transactions=2)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    assert run("project", home=tmp_path, env=env)[0] == 0
    config = LakeConfig("postgres", env["PROJECTIONIST_LAKE"], env["PROJECTIONIST_LAKE_DATA"] + "/")
    con = open_lake(config)
    committed: list[int] = []

    def stop_after_two(events: int) -> None:
        committed.append(events)
        if len(committed) == 2:
            raise _Interrupted

    try:
        with pytest.raises(_Interrupted):
            rebuild(con, discover(), "cart_summary", 2, progress=stop_after_two, chunk_events=200)
    finally:
        con.close()
    code, output = run("status", home=tmp_path, env=env)
    assert code == 0 and "rebuild of cart_summary v2 unfinished: 2 of 4 chunks committed" in output, output
    code, output = run("rebuild", "cart_summary", "--version", "2", home=tmp_path, env=env)
    assert code == 0 and "continuing after chunk 2 of 4" in output, output
    assert "in 4 chunks, 2 of them committed by an earlier run" in output, output
    assert "unfinished" not in run("status", home=tmp_path, env=env)[1]


def test_rebuild_in_shards_gives_the_one_process_table(
    fresh_database: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    code, output = run("demo", "--events", "600", home=tmp_path, env=env)
    assert code == 0, output
    query = ["sql", "SELECT * FROM projections.cart_summary_v2 ORDER BY ALL", "--json"]
    _, before = run(*query, home=tmp_path, env=env)
    code, output = run("rebuild", "cart_summary", "--version", "2", "--shards", "3", home=tmp_path, env=env)
    assert code == 0, output
    assert "in 3 shards" in output and output.count("cart_summary v2 shard ") == 3, output
    assert run(*query, home=tmp_path, env=env)[1] == before
    code, output = run("rebuild", "daily_revenue", "--version", "1", "--shards", "2", home=tmp_path, env=env)
    assert code == 2 and "cannot be split by stream" in output
