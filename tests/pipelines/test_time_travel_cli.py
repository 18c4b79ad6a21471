"""``projectionist sql --as-of-position`` and ``--as-of``: the live projections as they stood at a store position."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from benchmarks._lake_data import bulk_append
from eventstore.adapters import NativeAdapter
from pipelines.cli import cli
from projections import discover
from warehouse.ingest import ingest, lake_checkpoint
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import project

ANSWER = (
    "SELECT count(*) AS carts, sum(item_quantity) AS items, sum(total_amount) AS amount, "
    "count(*) FILTER (WHERE status = 'open') AS open FROM analytics.cart_summary"
)
COLUMNS = (
    "SELECT string_agg(column_name, ',' ORDER BY column_index) FROM duckdb_columns() WHERE table_name = 'cart_summary'"
)


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_as_of_position_answers_as_before_later_events_and_a_promotion(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}

    def sql(*args: str) -> str:
        code, output = run("sql", *args, "--json", home=tmp_path, env=env)
        assert code == 0, output
        return output

    registry = discover()
    lake = LakeConfig("postgres", lake_env["PROJECTIONIST_LAKE"], lake_env["PROJECTIONIST_LAKE_DATA"] + "/")

    def ingest_and_project(batch_size: int) -> str:
        """What `projectionist ingest` and `project` do (in this process: one attach); the checkpoint reached."""
        con = open_lake(lake)
        try:
            with NativeAdapter(store_dsn) as reader:
                ingest(con, StoreSource(reader), batch_size=batch_size)
            project(con, registry)
            return str(lake_checkpoint(con)[0])
        finally:
            con.close()

    bulk_append(store_dsn, 500, transactions=2)
    position = ingest_and_project(300)  # two tagged commits
    then = datetime.now(UTC)
    earlier, earlier_columns = sql(ANSWER), sql(COLUMNS)

    bulk_append(store_dsn, 500, transactions=1, seed=3)
    now_position = ingest_and_project(500_000)
    assert run("rebuild", "cart_summary", "--version", "1", home=tmp_path, env=env)[0] == 0
    assert run("promote", "cart_summary", "1", "--force", home=tmp_path, env=env)[0] == 0
    now, now_columns = sql(ANSWER), sql(COLUMNS)
    assert now != earlier and now_columns != earlier_columns  # more carts, and v1 has no currency column

    assert sql("--as-of-position", position, ANSWER) == earlier
    assert sql("--as-of-position", position, COLUMNS) == earlier_columns, "the view read v2 then"
    assert sql("--as-of", then.isoformat(), ANSWER) == earlier
    assert json.loads(sql("--as-of-position", position, "SELECT count(*) AS n FROM raw.all_events")) == [{"n": 500}]
    code, output = run("sql", "--as-of-position", position, "SELECT 1 AS one", home=tmp_path, env=env)
    assert code == 0 and "(the lake as of snapshot " in output and f"checkpoint {position})" in output

    for args, message in (
        (["--as-of-position", "500"], "this store's checkpoints are TRANSACTION_ID/GLOBAL_POSITION"),
        (["--as-of-position", "soon"], "--as-of-position 'soon' is not a store position"),
        (["--as-of-position", "999999999/1"], "is beyond the lake's checkpoint"),
        (["--as-of", "yesterday"], "--as-of 'yesterday' is not a timestamp"),
        (["--as-of", then.isoformat(), "--as-of-position", position], "choose one of --as-of-position and --as-of"),
    ):
        code, output = run("sql", *args, "SELECT 1", home=tmp_path, env=env)
        assert code == 2 and message in output, (args, output)
    code, output = run("sql", "--as-of-position", position, "COPY (SELECT 1) TO 'x.csv'", home=tmp_path, env=env)
    assert code != 0 and not (Path.cwd() / "x.csv").exists(), "time travel stays in the analyst sandbox"

    # Maintenance that keeps only the current snapshot takes the position out of reach, and says so.
    assert run("maintain", "--older-than", "0s", home=tmp_path, env=env)[0] == 0
    code, output = run("sql", "--as-of-position", position, ANSWER, home=tmp_path, env=env)
    assert code == 2 and f"position {position} is before the oldest tagged commit the lake keeps" in output, output
    assert "older snapshots were expired (`projectionist maintain`" in output
    code, output = run("sql", "--as-of", then.isoformat(), ANSWER, home=tmp_path, env=env)
    assert code == 2 and "is before the oldest snapshot the lake keeps" in output, output
    assert sql("--as-of-position", now_position, ANSWER) == now, "the current position stays answerable"
