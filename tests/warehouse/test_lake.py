"""The lake's configuration, attach, schemas and conflict retries, on a real DuckLake."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from eventstore.connection import EmbeddedServer, connect, ensure_database, libpq_conninfo
from eventstore.errors import ConfigurationError
from eventstore.settings import Settings
from warehouse.errors import LakeConfigurationError
from warehouse.lake import ANALYST_ROLE, SCHEMAS, LakeConfig, open_lake, retry_conflicts, rollback_transaction


def test_default_catalog_is_the_embedded_server_even_with_an_external_store(store_dsn: str) -> None:
    # Not under tmp_path: pytest's folders are private to root, and the server runs as another user.
    home = Path(tempfile.mkdtemp(prefix="projectionist-lake-test-", dir="/tmp"))
    settings = Settings(home=home, event_store_dsn=store_dsn)
    try:
        config = LakeConfig.from_settings(settings)
        params = libpq_conninfo(config.catalog)
        assert params["dbname"] == "projectionist_lake" and params["host"] == str(home / "postgres")
        assert config.data_path == f"{home}/lake/data/"
        open_lake(config).close()
        with connect(store_dsn) as conn:  # nothing of the lake in the event store's database
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ducklake%'").fetchone() == (0,)
    finally:
        EmbeddedServer(home).stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("postgresql://lake@db.internal:5432/lake", "postgres"),
        ("host=db.internal dbname=lake", "postgres"),
        ("sqlite:/var/lib/lake.catalog", "sqlite"),
        ("/var/lib/lake.sqlite", "sqlite"),
    ],
)
def test_projectionist_lake_selects_the_catalog(spec: str, kind: str, tmp_path: Path) -> None:
    config = LakeConfig.from_settings(Settings(home=tmp_path, lake=spec, lake_data="s3://bucket/lake"))
    assert config.catalog_kind == kind and config.data_path == "s3://bucket/lake/"


def test_a_catalog_dsn_without_a_password_is_not_parsed_until_attached_and_a_malformed_one_is_named(
    tmp_path: Path,
) -> None:
    """Parsing a DSN costs psycopg's import: one with no password to hide is taken as given; the attach reports
    a malformed one with the parser's reason, the password of one that has it is still hidden."""
    config = LakeConfig.from_settings(Settings(home=tmp_path, lake="host=/nowhere dbname=lake 'broken"))
    with pytest.raises(ConfigurationError, match=r"cannot be parsed .*missing \"=\""):
        open_lake(config)
    assert config.analyst_catalog == f"host=/nowhere dbname=lake 'broken user={ANALYST_ROLE}"
    hidden = LakeConfig.from_settings(Settings(home=tmp_path, lake="host=/nowhere dbname=lake password=s3cret"))
    assert hidden.secret == "s3cret" and hidden.analyst_catalog is None
    uri = LakeConfig.from_settings(Settings(home=tmp_path, lake="postgresql://owner:s3cret@db/lake"))
    assert uri.secret == "s3cret"


def test_an_unknown_catalog_spec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LakeConfigurationError, match="neither a PostgreSQL DSN nor a SQLite file"):
        LakeConfig.from_settings(Settings(home=tmp_path, lake="mysql://lake"))


def test_schemas_are_created_once_and_reading_a_missing_lake_says_what_to_do(
    lake_config: LakeConfig, tmp_path: Path
) -> None:
    with pytest.raises(LakeConfigurationError, match="projectionist ingest"):
        open_lake(LakeConfig("sqlite", str(tmp_path / "none.sqlite"), str(tmp_path / "d") + "/"), read_only=True)
    con = open_lake(lake_config)
    schemas = {
        r[0] for r in con.execute("SELECT schema_name FROM duckdb_schemas() WHERE database_name = 'lake'").fetchall()
    }
    assert set(SCHEMAS) <= schemas
    snapshots = con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchone()
    con.close()
    con = open_lake(lake_config)
    assert con.execute("SELECT count(*) FROM ducklake_snapshots('lake')").fetchone() == snapshots


def test_conflicting_commits_of_concurrent_writers_are_retried_not_lost(lake_config: LakeConfig) -> None:
    setup = open_lake(lake_config)
    setup.execute("CREATE TABLE projections.counter (n BIGINT)")
    setup.execute("INSERT INTO projections.counter VALUES (0)")
    setup.close()
    writers, increments = 3, 8
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            con = open_lake(lake_config)
        except BaseException as exc:
            errors.append(exc)
            return

        def increment() -> None:
            con.execute("BEGIN")
            try:
                con.execute("UPDATE projections.counter SET n = n + 1")  # every writer touches the same row
                con.execute("COMMIT")
            except BaseException:
                rollback_transaction(con)
                raise

        try:
            for _ in range(increments):
                retry_conflicts(increment, "incrementing", attempts=30)
        except BaseException as exc:
            errors.append(exc)
        finally:
            con.close()

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    con = open_lake(lake_config, read_only=True)
    assert con.execute("SELECT n FROM projections.counter").fetchone() == (writers * increments,)


_OPEN = """
import sys
from eventstore.errors import ConfigurationError
from eventstore.settings import Settings
from warehouse.lake import LakeConfig, open_lake
open_lake(LakeConfig.from_settings(Settings(home=sys.argv[1], lake=sys.argv[2], lake_data=sys.argv[3]))).close()
"""


def test_processes_creating_the_same_new_lake_at_once_all_succeed(pg_server: str, tmp_path: Path) -> None:
    # DuckLake creates a new catalog's tables on the first ATTACH; two processes doing it at once
    # collide in PostgreSQL ("relation ducklake_metadata already exists", a duplicate key in
    # pg_namespace): seen as a terminal error by the second of two first ingests.
    for round_ in range(4):
        name = f"race_{uuid.uuid4().hex[:10]}"
        dsn = ensure_database(pg_server, name)
        try:
            args = [str(tmp_path / "home"), dsn, str(tmp_path / f"data{round_}")]
            racers = [
                subprocess.Popen([sys.executable, "-c", _OPEN, *args], stderr=subprocess.PIPE, text=True)
                for _ in range(4)
            ]
            errors = [racer.communicate(timeout=120)[1] for racer in racers]
            assert [r.returncode for r in racers] == [0] * 4, errors
        finally:
            with connect(pg_server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_file_rewrite_and_the_write_transactions_of_other_processes_take_turns(lake_config: LakeConfig) -> None:
    """DuckLake let a row deleted while a merge rewrote its file come back; the catalog's lock orders them."""
    import time

    from warehouse.lake import rewriting, transaction
    from warehouse.maintenance import tidy_table

    writer, maintainer = open_lake(lake_config), open_lake(lake_config)  # each its own session: as two processes
    writer.execute("CREATE TABLE meta.rewrite_probe (k INTEGER, v INTEGER)")
    writer.execute("INSERT INTO meta.rewrite_probe VALUES (1, 0), (2, 0)")
    writer.execute("CALL ducklake_flush_inlined_data('lake', schema_name => 'meta', table_name => 'rewrite_probe')")
    with transaction(writer):
        writer.execute("UPDATE meta.rewrite_probe SET v = 1 WHERE k = 2")  # a deleted row: the tidy rewrites

    # A rewrite waits for the write transaction under way...
    tidied = threading.Event()
    tidy = threading.Thread(target=lambda: (tidy_table(maintainer, "meta", "rewrite_probe"), tidied.set()))
    with transaction(writer):
        writer.execute("UPDATE meta.rewrite_probe SET v = v + 1 WHERE k = 1")
        tidy.start()
        time.sleep(0.5)
        assert not tidied.is_set(), "the file was rewritten while a transaction deleted from it"
    tidy.join(30)
    assert tidied.is_set()
    # ...and a write transaction waits for a rewrite under way.
    written = threading.Event()

    def write() -> None:
        with transaction(writer):
            writer.execute("UPDATE meta.rewrite_probe SET v = v + 1 WHERE k = 2")
        written.set()

    with rewriting(maintainer):
        change = threading.Thread(target=write)
        change.start()
        time.sleep(0.5)
        assert not written.is_set(), "a transaction ran while files were being rewritten"
    change.join(30)
    assert written.is_set()
    assert writer.execute("SELECT k, v FROM meta.rewrite_probe ORDER BY ALL").fetchall() == [(1, 1), (2, 2)]
    writer.close()
    maintainer.close()


def test_the_rewrite_lock_is_held_until_the_lake_has_committed(lake_config: LakeConfig) -> None:
    """The lock was released before DuckLake's own commit: a rewrite ran while a writer's COMMIT waited on the
    catalog (or slept between DuckLake's retries of it), and the row that writer replaced came back."""
    import time

    from warehouse.lake import transaction
    from warehouse.maintenance import tidy_table

    writer, maintainer = open_lake(lake_config), open_lake(lake_config)  # each its own session: as two processes
    writer.execute("CREATE TABLE meta.commit_probe (k INTEGER, v INTEGER)")
    writer.execute("INSERT INTO meta.commit_probe SELECT range, 0 FROM range(20)")
    writer.execute("CALL ducklake_flush_inlined_data('lake', schema_name => 'meta', table_name => 'commit_probe')")
    writer.execute("DELETE FROM meta.commit_probe WHERE k = 19")  # a deleted row: the tidy rewrites the file
    committing, committed, tidied = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        with transaction(writer):
            writer.execute("UPDATE meta.commit_probe SET v = 1 WHERE k = 1")
            committing.set()
        committed.set()

    with connect(lake_config.catalog) as catalog:  # DuckLake's COMMIT writes a snapshot row: it waits here
        catalog.execute("LOCK TABLE ducklake_snapshot IN SHARE ROW EXCLUSIVE MODE")
        change = threading.Thread(target=write)
        change.start()
        assert committing.wait(30)
        time.sleep(0.3)  # the COMMIT is under way, waiting on the snapshot table
        tidy = threading.Thread(target=lambda: (tidy_table(maintainer, "meta", "commit_probe"), tidied.set()))
        tidy.start()
        time.sleep(0.5)
        assert not committed.is_set()
        # The rewrite's own COMMIT would wait on the snapshot table too: whether it holds the lock is the question.
        granted = catalog.execute(
            "SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
        assert granted == [("ShareLock",)], f"the lock the writer holds while it commits: {granted}"
    change.join(30)
    tidy.join(30)
    assert committed.is_set() and tidied.is_set()
    assert writer.execute("SELECT v FROM meta.commit_probe WHERE k = 1").fetchall() == [(1,)]
    assert writer.execute("SELECT count(*) FROM meta.commit_probe").fetchall() == [(19,)]
    writer.close()
    maintainer.close()
