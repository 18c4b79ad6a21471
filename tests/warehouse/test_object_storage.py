"""The lake's data on S3 (a real S3 API: moto's server on 127.0.0.1): the same lake as on local files,
read in the analyst sandbox, and a commit cut off mid-upload leaves nothing half-written."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from eventstore.connection import connect, ensure_database
from eventstore.errors import ProjectionistError
from eventstore.positions import START
from projections import discover
from tests.s3server import S3Server, s3_server
from tests.warehouse.conftest import append_shop
from warehouse.diff import compare_versions
from warehouse.errors import LakeConfigurationError
from warehouse.feeds import Consumer, add_consumer, check_consumer, deliver
from warehouse.ingest import ingest, lake_checkpoint
from warehouse.lake import LakeConfig, open_lake
from warehouse.object_storage import S3Location
from warehouse.query import sandbox
from warehouse.sources import StoreSource
from warehouse.versions import promote, rebuild

BUCKET = "projectionist-lake"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server(BUCKET) as server:
        yield server


@pytest.fixture()
def s3_lake(s3: S3Server, pg_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LakeConfig]:
    """A lake whose catalog is a new database on the test server and whose files are under a new S3 prefix."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)  # the standard AWS variables, as an operator sets them
    name = f"lake_{uuid.uuid4().hex[:12]}"
    dsn = ensure_database(pg_server, name)
    data = f"s3://{BUCKET}/{name}/"
    try:
        yield LakeConfig("postgres", dsn, data, s3=S3Location.parse(data, os.environ))
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build(config: LakeConfig, source: StoreSource) -> list[tuple[object, ...]]:
    """Ingest, build cart_summary v1 and v2, compare, promote v2; the live view's rows."""
    registry = discover(bundled=True, folder=None)
    con = open_lake(config)
    try:
        ingest(con, source)
        rebuild(con, registry, "cart_summary", 1)
        promote(con, registry, "cart_summary", 1)
        rebuild(con, registry, "cart_summary", 2)
        compare_versions(con, registry, "cart_summary")  # recorded: the promotion's gate reads it
        promote(con, registry, "cart_summary", 2)
        return con.execute("SELECT * FROM analytics.cart_summary ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_a_lake_on_s3_answers_as_a_lake_on_local_files(
    s3: S3Server, s3_lake: LakeConfig, lake_config: LakeConfig, source: StoreSource, store_dsn: str, tmp_path: Path
) -> None:
    append_shop(store_dsn, 1_500)
    on_s3 = build(s3_lake, source)
    assert on_s3 and on_s3 == build(lake_config, source)
    assert s3_lake.s3 is not None
    keys = s3.keys(BUCKET, s3_lake.data_path.removeprefix(f"s3://{BUCKET}/"))
    assert any(k.startswith(f"{s3_lake.data_path.removeprefix(f's3://{BUCKET}/')}raw/events/") for k in keys), keys
    assert any("/projections/" in k for k in keys), keys  # a rebuild writes under its staging table's folder
    # An analyst's session: read-only, sandboxed (no local files, no ATTACH, no SET), still reads S3.
    con = open_lake(s3_lake, read_only=True)
    try:
        sandbox(con, s3_lake.data_path, tmp_path / "spill")
        assert con.execute("SELECT * FROM analytics.cart_summary ORDER BY ALL").fetchall() == on_s3
        with pytest.raises(duckdb.Error):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
        # Nothing else in the bucket either: only the lake's own prefix is open.
        s3.client().put_object(Bucket=BUCKET, Key="elsewhere/private.csv", Body=b"secret\n")
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_csv('s3://{BUCKET}/elsewhere/private.csv')")
    finally:
        con.close()


def test_an_upload_cut_off_mid_commit_leaves_the_lake_as_it_was(
    s3: S3Server, s3_lake: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    appended = append_shop(store_dsn, 1_200)
    con = open_lake(s3_lake)  # creates the lake: its schemas and meta tables
    before = s3.proxy.uploads_cut
    s3.cut_on_next_upload()
    try:
        with pytest.raises(ProjectionistError) as failed:
            ingest(con, source)
    finally:
        con.close()
        s3.heal()
    assert s3.proxy.uploads_cut > before  # the line was cut during the batch's upload
    assert "\n" not in str(failed.value)  # one line for the operator
    con = open_lake(s3_lake)
    try:
        assert lake_checkpoint(con) == (START, 0)  # the batch's commit never happened
        result = ingest(con, source)  # the rerun lands every event once
        counts = con.execute("SELECT count(*), count(DISTINCT global_position) FROM raw.events").fetchone()
        assert result.events == appended and counts == (appended, appended)
    finally:
        con.close()


def test_object_storage_settings_are_checked_before_anything_runs() -> None:
    with pytest.raises(LakeConfigurationError, match="only local folders and s3://"):
        S3Location.parse("gs://bucket/x/", {})
    with pytest.raises(LakeConfigurationError, match="is not an S3 bucket name"):
        S3Location.parse("s3://Bad_Bucket/x/", {})
    with pytest.raises(LakeConfigurationError, match="AWS_ENDPOINT_URL"):
        S3Location.parse("s3://bucket/x", {"AWS_ENDPOINT_URL": "127.0.0.1:9000"})
    with pytest.raises(LakeConfigurationError, match="PROJECTIONIST_S3_URL_STYLE"):
        S3Location.parse("s3://bucket/x", {"PROJECTIONIST_S3_URL_STYLE": "virtual"})
    local = S3Location.parse("s3://bucket/x", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"})
    assert (local.prefix, local.endpoint, local.use_ssl, local.url_style) == ("x/", "127.0.0.1:9000", False, "path")
    aws = S3Location.parse("s3://bucket", {"AWS_SECRET_ACCESS_KEY": "never-printed"})
    assert (aws.prefix, aws.endpoint, aws.use_ssl, aws.url_style) == ("", None, True, "vhost")
    assert "never-printed" not in aws.secret_sql() and "credential_chain" in aws.secret_sql()


def test_no_credentials_anywhere_is_one_clear_error(
    s3: S3Server, lake_config: LakeConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    data = f"s3://{BUCKET}/no-credentials/"
    config = LakeConfig("postgres", lake_config.catalog, data, s3=S3Location.parse(data, os.environ))
    with pytest.raises(LakeConfigurationError, match="Give credentials the standard AWS way") as refused:
        open_lake(config)
    assert "\n" not in str(refused.value)


def test_a_parquet_feed_drops_its_batches_and_manifest_under_an_s3_prefix(
    s3: S3Server, lake_config: LakeConfig, source: StoreSource, store_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parquet consumer whose target is s3://bucket/prefix: one object per batch, the manifest last."""
    append_shop(store_dsn, 600)
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    registry = discover(bundled=True, folder=None)
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        rebuild(con, registry, "cart_summary", 1)
        promote(con, registry, "cart_summary", 1)
        add_consumer(con, Consumer("drops", "parquet", "cart_summary", f"s3://{BUCKET}/feeds", batch_size=50))
        [result] = deliver(con, registry, "drops")
        rows = con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone()[0]
    finally:
        con.close()
    keys = s3.keys(BUCKET, "feeds/drops/")
    manifests = [k for k in keys if k.endswith(".manifest.json")]
    assert len(manifests) == 1 and result.batches == -(-rows // 50)
    body = s3.client().get_object(Bucket=BUCKET, Key=manifests[0])["Body"].read()
    manifest = json.loads(body)
    assert manifest["changes"] == rows and manifest["projection"] == "cart_summary"
    listed = sorted(f"feeds/drops/{f['file']}" for f in manifest["files"])
    assert listed == sorted(k for k in keys if k.endswith(".parquet"))
    with pytest.raises(ProjectionistError, match="not an S3 bucket name"):
        check_consumer(Consumer("bad", "parquet", "cart_summary", "s3://No_Such/x"), registry)
