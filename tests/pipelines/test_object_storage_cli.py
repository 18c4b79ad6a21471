"""The CLI with PROJECTIONIST_LAKE_DATA=s3://...: the demo, an analyst's `sql`, and `attach` for a plain DuckDB,
against a real S3 API (moto's server on 127.0.0.1); no key is ever printed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.duckdb_connections import new_connection
from tests.pipelines.test_lake_cli import run
from tests.s3server import CREDENTIALS, S3Server, s3_server

BUCKET = "projectionist-cli"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server(BUCKET) as server:
        yield server


def test_demo_sql_and_attach_on_s3(
    s3: S3Server, fresh_database: str, tmp_path: Path, lake_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"demo-{uuid.uuid4().hex[:8]}"
    env = {
        **lake_env,
        **s3.env(),
        "PROJECTIONIST_LAKE_DATA": f"s3://{BUCKET}/{prefix}/",
        "PROJECTIONIST_EVENT_STORE_DSN": fresh_database,
    }
    code, output = run("demo", "--events", "300", home=tmp_path, env=env)
    assert code == 0, output
    assert f"data s3://{BUCKET}/{prefix}/" in run("status", home=tmp_path, env=env)[1]
    assert any(k.endswith(".parquet") for k in s3.keys(BUCKET, prefix))
    assert not list(tmp_path.rglob("*.parquet"))  # nothing of the lake on local disk
    code, output = run("sql", "SELECT count(*) AS n FROM raw.all_events", "--json", home=tmp_path, env=env)
    assert code == 0, output
    events = json.loads(output)[0]["n"]
    assert events > 0

    code, output = run("attach", home=tmp_path, env=env)
    assert code == 0, output
    for secret in CREDENTIALS.values():
        assert secret not in output
    statements = [line for line in output.splitlines() if line and not line.startswith(("--", "INSTALL", "LOAD"))]
    assert statements[0].startswith("CREATE OR REPLACE SECRET") and "credential_chain" in statements[0]
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)  # the analyst's own AWS environment
    con = new_connection("ducklake", "postgres", "httpfs", "aws")  # the extensions, as LOAD would give them
    for statement in statements:  # the secret, ATTACH, USE, then the sandbox's SET lines
        con.execute(statement)
    assert con.execute("SELECT count(*) FROM raw.all_events").fetchone() == (events,)
