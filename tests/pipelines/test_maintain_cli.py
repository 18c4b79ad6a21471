"""``projectionist maintain``, ``retain --older-than``, the lake's size in ``status`` and the maintain_lake job."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from click.testing import CliRunner

from benchmarks._lake_data import bulk_append
from eventstore.adapters import NativeAdapter
from pipelines.cli import cli
from pipelines.definitions import defs
from pipelines.jobs import maintain_lake
from projections import discover
from tests.pipelines.conftest import resource_for
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import promote, rebuild


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def files_under(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def test_maintain_retain_and_status(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    data = Path(lake_env["PROJECTIONIST_LAKE_DATA"])
    bulk_append(store_dsn, 2_000, transactions=2)
    registry = discover()
    con = open_lake(LakeConfig("postgres", lake_env["PROJECTIONIST_LAKE"], str(data) + "/"))
    with NativeAdapter(store_dsn) as reader:
        ingest(con, StoreSource(reader), batch_size=500, compact_after=None)
    for version in (1, 1, 2):  # v1 twice: the first build's files stay behind for time travel
        rebuild(con, registry, "cart_summary", version)
    promote(con, registry, "cart_summary", 1)
    promote(con, registry, "cart_summary", 2, force=True)
    con.close()
    code, output = run("sql", "SELECT * FROM analytics.cart_summary ORDER BY ALL", "--csv", home=tmp_path, env=env)
    assert code == 0
    live = output

    code, output = run("maintain", "--older-than", "7 days", home=tmp_path, env=env)
    assert code == 2 and "--older-than '7 days' is not a duration: use a number and a unit, e.g. 7d" in output
    code, output = run("retain", "cart_summary", "--keep", "0", "--yes", "--older-than", "soon", home=tmp_path, env=env)
    assert code == 2 and "is not a duration" in output  # and nothing dropped: the retain below drops v1

    code, output = run("status", "--json", home=tmp_path, env=env)
    size = json.loads(output)["lake"]["size"]
    assert size["disk_bytes"] == sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    assert size["reclaimable_bytes"] == size["disk_bytes"] - size["live_bytes"] > 0
    code, output = run("status", home=tmp_path, env=env)
    assert "  size:       " in output and "reclaimable" in output

    files = files_under(data)
    code, output = run("maintain", "--older-than", "0s", "--dry-run", "--json", home=tmp_path, env=env)
    report = json.loads(output)
    assert code == 0 and report["dry_run"] and report["expired_snapshots"] > 0 and files_under(data) == files

    # Dropping v1 with the default 7 days keeps its files (time travel still reads them); 0s deletes them.
    code, output = run("retain", "cart_summary", "--keep", "0", "--yes", home=tmp_path, env=env)
    assert code == 0 and "dropped v1" in output and "expired 0 snapshots superseded more than 7d ago" in output

    code, output = run("maintain", "--older-than", "0s", home=tmp_path, env=env)
    assert code == 0 and "merged the small files of" in output and "after: " in output, output
    code, output = run("status", "--json", home=tmp_path, env=env)
    size = json.loads(output)["lake"]["size"]
    assert size["reclaimable_bytes"] == 0 and size["disk_bytes"] == size["live_bytes"]
    assert run("sql", "SELECT * FROM analytics.cart_summary ORDER BY ALL", "--csv", home=tmp_path, env=env)[1] == live

    # The Dagster job does the same; its schedule is off until turned on.
    assert defs.resolve_schedule_def("maintain_lake_nightly").default_status == dg.DefaultScheduleStatus.STOPPED
    result = maintain_lake.execute_in_process(
        resources={"projectionist": resource_for(store_dsn, lake_env, tmp_path)},
        run_config={"ops": {"maintain_the_lake": {"config": {"older_than": "0s"}}}},
    )
    assert result.success
