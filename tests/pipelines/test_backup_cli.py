"""`projectionist backup` and `restore`: a lake restored into a new home answers as the original did,
and continues from its checkpoint against the same store; nothing is overwritten, nothing half-restored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks._lake_data import bulk_append
from tests.pipelines.conftest import new_lake_env
from tests.pipelines.test_lake_cli import run

QUERIES = (
    "SELECT count(*), max(global_position) FROM raw.all_events",
    "SELECT status, count(*), sum(total_amount) FROM analytics.cart_summary GROUP BY ALL ORDER BY ALL",
    "SELECT * FROM projections.cart_summary_v2 ORDER BY ALL",
)


@pytest.fixture()
def other_lake(pg_server: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A second, empty lake: a new catalog database and a new data folder (a new home's lake)."""
    with new_lake_env(pg_server, tmp_path / "restored-data") as env:
        yield env


def answers(home: Path, env: dict[str, str]) -> list[object]:
    found = []
    for query in QUERIES:
        code, output = run("sql", query, "--json", home=home, env=env)
        assert code == 0, output
        found.append(json.loads(output))
    code, output = run("versions", "--json", home=home, env=env)
    assert code == 0, output
    found.append([(v["projection"], v["version"], v["state"], v["rows"], v["checkpoint"]) for v in json.loads(output)])
    return found


def test_backup_then_restore_into_a_new_home_answers_the_same_and_continues(
    fresh_database: str, tmp_path: Path, lake_env: dict[str, str], other_lake: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    home, new_home = tmp_path / "home", tmp_path / "new-home"
    code, output = run("demo", "--events", "400", home=home, env=env)
    assert code == 0, output
    before = answers(home, env)
    backup = tmp_path / "backup"

    code, output = run("backup", str(backup), "--dry-run", home=home, env=env)
    assert code == 0 and "dry run: would back up snapshot" in output and not backup.exists(), output
    code, output = run("backup", str(backup), "--json", home=home, env=env)
    assert code == 0, output
    taken = json.loads(output)
    assert taken["files"] > 0 and taken["bytes"] > 0 and (backup / "catalog.dump").stat().st_size > 0
    assert json.loads((backup / "manifest.json").read_text())["snapshot_id"] == taken["snapshot_id"]
    code, output = run("backup", str(backup), home=home, env=env)
    assert code == 2 and "exists and is not empty" in output  # a backup never overwrites another

    # Writes after the backup are not in it.
    bulk_append(fresh_database, 150, transactions=2, seed=11)
    code, output = run("ingest", home=home, env=env)
    assert code == 0, output

    new_env = {**other_lake, "PROJECTIONIST_EVENT_STORE_DSN": fresh_database}
    code, output = run("restore", str(backup), "--dry-run", home=new_home, env=new_env)
    assert code == 0 and "dry run: would restore" in output, output
    assert not Path(other_lake["PROJECTIONIST_LAKE_DATA"]).exists() or not any(
        Path(other_lake["PROJECTIONIST_LAKE_DATA"]).rglob("*.parquet")
    )
    code, output = run("restore", str(backup), home=new_home, env=new_env)
    assert code == 0 and f"restored snapshot {taken['snapshot_id']}" in output, output
    assert answers(new_home, new_env) == before  # the lake as it was at the backup, in its new place
    # The restored catalog reads its own data folder, not the original's.
    assert Path(other_lake["PROJECTIONIST_LAKE_DATA"]).resolve() != Path(lake_env["PROJECTIONIST_LAKE_DATA"]).resolve()

    # Against the same store, it continues from its checkpoint: the events written since, once each.
    code, output = run("ingest", home=new_home, env=new_env)
    assert code == 0, output
    assert answers(new_home, new_env)[0] == answers(home, env)[0]

    code, output = run("restore", str(backup), home=new_home, env=new_env)
    assert code == 2 and "a lake already exists" in output and "nothing was changed" in output


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path, other_lake: dict[str, str]) -> None:
    code, output = run("restore", str(tmp_path), home=tmp_path / "home", env=other_lake)
    assert code == 2 and "is not a Projectionist backup (manifest.json is missing)" in output
    (tmp_path / "manifest.json").write_text('{"format": 99}')
    code, output = run("restore", str(tmp_path), home=tmp_path / "home", env=other_lake)
    assert code == 2 and "restores format 1" in output


def test_backup_of_a_lake_not_created_yet(tmp_path: Path, other_lake: dict[str, str]) -> None:
    code, output = run("backup", str(tmp_path / "b"), home=tmp_path / "home", env=other_lake)
    assert code == 2 and "has not been created yet" in output and not (tmp_path / "b").exists()
