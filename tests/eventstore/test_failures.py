"""Transient or terminal: one test per class of failure, each produced for real on PostgreSQL or DuckDB.

Transient (exit 75, retried): connection refused, a server whose socket is gone (restarting), a
session killed by the server (admin shutdown), a lock wait that timed out, a lost DuckLake commit
race. Terminal (exit 2, not retried): a wrong password, a missing role or database, a bad SSL
setting, a missing permission, a missing table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import conninfo

from eventstore.connection import connect, connect_read_only, libpq_conninfo
from eventstore.duckdb_connections import new_connection
from eventstore.errors import ConfigurationError, StoreUnavailableError
from eventstore.failures import reason, scrub, translate, verdict


def _fails(dsn: str) -> BaseException:
    try:
        connect(dsn).close()
    except BaseException as exc:
        return exc
    raise AssertionError(f"connecting to {dsn} succeeded")


def _dsn(base: str, **changes: str) -> str:
    params = libpq_conninfo(base)
    params.update(changes)
    return conninfo.make_conninfo("", **params)


@pytest.fixture()
def password_role(pg_server: str) -> Iterator[tuple[str, str]]:
    """A role that must give its password (scram) on the test server: (right DSN, wrong DSN).

    The embedded test server trusts local connections; one line on top of its pg_hba.conf makes
    this role (only) authenticate, and is removed afterwards.
    """
    role = f"pw_{uuid.uuid4().hex[:10]}"
    with connect(pg_server, autocommit=True) as conn:
        hba_row = conn.execute("SHOW hba_file").fetchone()
        assert hba_row is not None
        hba = Path(str(hba_row[0]))
        if not hba.exists():
            pytest.skip("the test server's pg_hba.conf is not on this machine (PROJECTIONIST_TEST_DSN)")
        original = hba.read_text()
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'right-pw'")
        hba.write_text(f"local all {role} scram-sha-256\nhost all {role} all scram-sha-256\n{original}")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield _dsn(pg_server, user=role, password="right-pw"), _dsn(pg_server, user=role, password="wrong-pw")
    finally:
        hba.write_text(original)
        with connect(pg_server, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


# -- transient ----------------------------------------------------------------------------------


def test_connection_refused_is_transient() -> None:
    error = translate(_fails("postgresql://u@127.0.0.1:1/shop"), "store")
    assert isinstance(error, StoreUnavailableError) and error.exit_code == 75
    assert "the server is not running or not listening there" in str(error)


def test_a_server_whose_socket_is_gone_is_restarting_hence_transient(tmp_path: Path) -> None:
    exc = _fails(f"host={tmp_path} dbname=shop")
    assert isinstance(exc, StoreUnavailableError) and exc.retryable
    assert verdict(exc.__cause__) == "transient"
    assert reason(exc.__cause__) == "the server is not running (its Unix socket is gone)"


def test_a_session_the_server_terminates_is_transient(store_dsn: str) -> None:
    with connect(store_dsn, autocommit=True) as victim, connect(store_dsn, autocommit=True) as admin:
        pid = victim.info.backend_pid
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError) as caught:
            victim.execute("SELECT 1")
    assert verdict(caught.value) == "transient"


def test_a_read_stuck_behind_ddl_times_out_transient(store_dsn: str) -> None:
    with connect(store_dsn) as ddl:
        ddl.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # held until rollback
        with connect_read_only(store_dsn) as reader, pytest.raises(psycopg.errors.LockNotAvailable) as caught:
            reader.execute("SELECT count(*) FROM events")
        ddl.rollback()
    assert verdict(caught.value) == "transient"


def test_duckdb_losing_the_store_mid_session_is_transient(store_dsn: str) -> None:
    con = new_connection("postgres")
    con.execute(f"ATTACH '{store_dsn}' AS store (TYPE postgres, READ_ONLY)")
    with connect(store_dsn, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    try:
        con.execute("SELECT * FROM postgres_query('store', 'SELECT 1')").fetchall()
    except duckdb.Error as exc:  # DuckDB may also reconnect by itself: both are fine, a wrong verdict is not
        assert verdict(exc) == "transient", exc
    finally:
        con.close()


def test_a_lost_duckdb_commit_race_is_transient() -> None:
    assert verdict(duckdb.TransactionException("Transaction conflict: cannot update a row twice")) == "transient"


# -- terminal -----------------------------------------------------------------------------------


def test_a_wrong_password_is_terminal_and_never_printed(password_role: tuple[str, str]) -> None:
    right, wrong = password_role
    connect(right).close()  # the role does log in with its password
    error = translate(_fails(wrong), "store", secrets=("wrong-pw",))
    assert isinstance(error, ConfigurationError) and error.exit_code == 2
    assert "password authentication failed" in str(error) and "wrong-pw" not in str(error)


def test_a_wrong_password_through_duckdb_is_terminal(password_role: tuple[str, str]) -> None:
    _, wrong = password_role
    con = new_connection("postgres")
    try:
        with pytest.raises(duckdb.Error) as caught:
            con.execute(f"ATTACH '{wrong}' AS store (TYPE postgres, READ_ONLY)")
    finally:
        con.close()
    assert verdict(caught.value) == "terminal"
    assert "wrong-pw" not in scrub(str(caught.value))


@pytest.mark.parametrize("change", [{"user": "nobody_at_all"}, {"dbname": "no_such_database"}])
def test_a_missing_role_or_database_is_terminal(pg_server: str, change: dict[str, str]) -> None:
    assert verdict(_fails(_dsn(pg_server, **change))) == "terminal"


def test_an_unknown_sslmode_is_terminal(pg_server: str) -> None:
    assert verdict(_fails(_dsn(pg_server, sslmode="bogus"))) == "terminal"


def test_a_missing_permission_is_terminal(store_dsn: str) -> None:
    role = f"nogrant_{uuid.uuid4().hex[:8]}"
    with connect(store_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with (
            connect(_dsn(store_dsn, user=role), autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege) as caught,
        ):
            conn.execute("SELECT count(*) FROM events")
        assert verdict(caught.value) == "terminal"
    finally:
        with connect(store_dsn, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")


def test_a_missing_table_is_terminal(fresh_database: str) -> None:
    with connect(fresh_database, autocommit=True) as conn, pytest.raises(psycopg.errors.UndefinedTable) as caught:
        conn.execute("SELECT * FROM events")
    assert verdict(caught.value) == "terminal"
    con = new_connection("postgres")
    try:
        con.execute(f"ATTACH '{fresh_database}' AS store (TYPE postgres, READ_ONLY)")
        with pytest.raises(duckdb.Error) as duck:
            con.execute("SELECT * FROM postgres_query('store', 'SELECT * FROM events')").fetchall()
    finally:
        con.close()
    assert verdict(duck.value) == "terminal"


def test_what_nobody_knows_is_terminal() -> None:
    assert verdict(duckdb.BinderException('Binder Error: Referenced column "x" not found')) == "terminal"
    assert verdict(ValueError("not ours")) is None


def test_messages_never_quote_a_password() -> None:
    text = 'IO Error: Unable to connect to Postgres at "host=h user=u password=s3cr3t dbname=d": refused'
    assert "s3cr3t" not in scrub(text)
    assert "s3cr3t" not in scrub("postgresql://u:s3cr3t@h/d")


def test_a_server_that_is_shutting_down_refuses_new_sessions_transient() -> None:
    # libpq's words for it, as DuckDB quotes them after a restart began (measured in the fault test).
    exc = duckdb.IOException(
        'IO Error: Unable to connect to Postgres at "dbname=x": connection to server on socket "/s/.s.PGSQL.5432" '
        "failed: FATAL:  the database system is shutting down"
    )
    assert verdict(exc) == "transient" and reason(exc) == "the database system is shutting down"


@pytest.mark.parametrize(
    "message",
    [
        'IO Error: Failed to prepare COPY "COPY (SELECT "global_position" FROM "public"."events") '
        'TO STDOUT (FORMAT "binary");": ',
        'IO Error: Failed to fetch header for COPY "COPY (SELECT "global_position" FROM "public"."events") TO STDOUT"',
    ],
)
def test_a_copy_that_got_no_answer_from_the_store_is_transient(message: str) -> None:
    # DuckDB's postgres extension's words when its session died under the scan and libpq had no
    # message of its own (an empty reason after the query): the store restarting, as in the fault test.
    assert verdict(duckdb.IOException(message)) == "transient"


def test_a_copy_the_store_refused_with_a_reason_is_judged_by_the_reason() -> None:
    refused = 'IO Error: Failed to prepare COPY "COPY (SELECT 1) TO STDOUT": ERROR:  permission denied for table events'
    assert verdict(duckdb.IOException(refused)) == "terminal"
