"""Two machines' worth of Projectionist: two homes sharing one catalog (PostgreSQL) and one bucket (S3),
ingesting and projecting at the same time. No event is lost or landed twice, no conflict reaches the user,
and the incrementally advanced projection equals a rebuild from scratch."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks._lake_data import bulk_append
from eventstore.connection import connect
from tests.pipelines.conftest import cli_process
from tests.pipelines.test_lake_cli import run
from tests.s3server import S3Server, s3_server

BUCKET = "projectionist-shared"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server(BUCKET) as server:
        yield server


def both(homes: list[Path], env: dict[str, str], *args: str) -> None:
    """``projectionist ARGS`` in every home at the same time; each must succeed without a word of error."""
    processes = [cli_process(list(args), home, env, merge_stderr=True) for home in homes]
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        assert "error" not in output.lower(), output


def store_count(dsn: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM public.events").fetchone()
    assert row is not None
    return int(row[0])


def test_two_homes_one_catalog_one_bucket(
    s3: S3Server, fresh_database: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {
        **s3.env(),
        "PROJECTIONIST_LAKE": lake_env["PROJECTIONIST_LAKE"],
        "PROJECTIONIST_LAKE_DATA": f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/",
        "PROJECTIONIST_EVENT_STORE_DSN": fresh_database,
    }
    homes = [tmp_path / "machine-a", tmp_path / "machine-b"]
    bulk_append(fresh_database, 600, transactions=3, seed=1)
    code, output = run("ingest", home=homes[0], env=env)
    assert code == 0, output
    code, output = run("rebuild", "cart_summary", "--version", "1", home=homes[0], env=env)
    assert code == 0, output
    code, output = run("promote", "cart_summary", "1", home=homes[0], env=env)
    assert code == 0, output

    for round_ in range(2):
        bulk_append(fresh_database, 400, transactions=4, seed=10 + round_)
        both(homes, env, "ingest")
        both(homes, env, "project")

    code, output = run(
        "sql", "SELECT count(*) AS n, count(DISTINCT global_position) AS d FROM raw.events", "--json",
        home=homes[1], env=env,
    )  # fmt: skip
    assert code == 0, output
    landed = json.loads(output)[0]
    assert landed["n"] == landed["d"] == store_count(fresh_database)  # none lost, none twice

    query = "SELECT * FROM analytics.cart_summary ORDER BY ALL"
    code, advanced = run("sql", query, "--json", home=homes[1], env=env)
    assert code == 0, advanced
    code, output = run("rebuild", "cart_summary", "--version", "1", home=homes[0], env=env)
    assert code == 0, output
    assert run("sql", query, "--json", home=homes[0], env=env)[1] == advanced
