"""Running unattended: reading never waits or writes, one lake per store, one-line errors with the right exit code."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from psycopg import conninfo

from benchmarks._lake_data import bulk_append
from eventstore.connection import connect, ensure_database, libpq_conninfo
from eventstore.native_store import NewEvent, append, create_schema
from pipelines.cli import cli
from tests.pipelines.conftest import cli_process
from tests.pipelines.test_versions_cli import lake_rows


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture()
def held_writer(store_dsn: str) -> Iterator[tuple[int, str]]:
    """A writer transaction left open (its event uncommitted), with a later transaction committed after it."""
    holder = connect(store_dsn)
    holder.execute("SET application_name = 'slow-writer'")
    append(holder, "cart-held", "cart", [NewEvent("CartOpened", {"customer_id": "held"})])
    pid = holder.info.backend_pid
    with connect(store_dsn) as later:
        append(later, "cart-later", "cart", [NewEvent("CartOpened", {"customer_id": "later"})])
    try:
        yield pid, store_dsn
    finally:
        holder.rollback()
        holder.close()


def test_status_neither_waits_for_a_held_writer_nor_delays_the_next_one(
    held_writer: tuple[int, str], tmp_path: Path, lake_env: dict[str, str]
) -> None:
    pid, store_dsn = held_writer
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    with ThreadPoolExecutor(1) as pool:
        # Status runs while the writer's transaction stays open: were it waiting on a lock, it
        # could only finish after the rollback in the fixture's teardown, and this would time out.
        code, output = pool.submit(run, "status", home=tmp_path, env=env).result(timeout=60)
    assert code == 0, output
    assert "held back: transaction" in output and f"pid {pid}" in output and "'slow-writer'" in output, output
    assert "lag:        1 events" in output, output  # the later, committed event waits behind it
    # A second writer appends at once: nothing status did is queued in front of it.
    with connect(store_dsn) as second:
        second.execute("SET lock_timeout = '2s'")
        append(second, "cart-second", "cart", [NewEvent("CartOpened", {"customer_id": "second"})])


def test_follow_names_the_transaction_holding_the_head_back(
    held_writer: tuple[int, str], tmp_path: Path, lake_env: dict[str, str]
) -> None:
    pid, store_dsn = held_writer
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    follower = cli_process(
        ["follow", "--interval", "0.1", "--report-held-after", "0.3", "--max-cycles", "15"], tmp_path, env
    )
    out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, out + err
    assert err.count("holds the safe head back") == 1, err  # once per holder, not once per cycle
    assert f"pid {pid}" in err and "'slow-writer'" in err


def _role_dsn(dsn: str, role: str) -> str:
    params = libpq_conninfo(dsn)
    params["user"] = role
    return conninfo.make_conninfo("", **params)


def test_a_select_only_role_runs_status_ingest_and_follow(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    appended = bulk_append(store_dsn, 300, transactions=2)
    role = f"selectonly_{uuid.uuid4().hex[:8]}"
    database = libpq_conninfo(store_dsn)["dbname"]
    with connect(store_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        admin.execute(f"GRANT SELECT ON public.events TO {role}")
    try:
        env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": _role_dsn(store_dsn, role)}
        code, output = run("status", home=tmp_path, env=env)
        assert code == 0 and f"events:    {appended:,} in" in output, output
        code, output = run("ingest", home=tmp_path, env=env)
        assert code == 0 and f"ingested {appended:,} events" in output, output
        code, output = run("follow", "--max-cycles", "2", "--interval", "0.1", home=tmp_path, env=env)
        assert code == 0 and "stopped after 2 cycles" in output, output
        assert lake_rows(env, "SELECT count(*) FROM analytics.cart_summary")[0][0] > 0
    finally:
        with connect(store_dsn, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_status_creates_no_table(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    """`status` issues no DDL: with the table dropped behind its back it reports the table missing."""
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    with connect(store_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE events")
    code, output = run("status", home=tmp_path, env=env)
    assert code == 2 and "projectionist init" in output, output
    with connect(store_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('public.events')").fetchone() == (None,)


def test_a_lake_refuses_another_database(
    pg_server: str, store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    bulk_append(store_dsn, 200, transactions=1)
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    other = ensure_database(pg_server, f"other_{uuid.uuid4().hex[:8]}")
    try:
        with connect(other) as conn:
            create_schema(conn)
        bulk_append(other, 100, transactions=1)
        other_env = {**env, "PROJECTIONIST_EVENT_STORE_DSN": other}
        before = lake_rows(env, "SELECT count(*), max(global_position) FROM raw.events")
        for command in (["ingest"], ["status"], ["follow", "--max-cycles", "1"]):
            code, output = run(*command, home=tmp_path, env=other_env)
            assert code == 2, (command, output)
            assert f"in database {libpq_conninfo(store_dsn)['dbname']!r}" in output, output
            assert "Nothing was written" in output and "another home" in output
        assert lake_rows(env, "SELECT count(*), max(global_position) FROM raw.events") == before
        assert run("ingest", home=tmp_path, env=env)[0] == 0  # the store it holds is still welcome
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{libpq_conninfo(other)["dbname"]}" WITH (FORCE)')


def test_two_first_ingests_race_into_a_new_lake(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    appended = bulk_append(store_dsn, 2000, transactions=4)
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    racers = [cli_process(["ingest", "--batch-size", "300"], tmp_path / f"home{i}", env) for i in range(2)]
    results = [(r.wait(timeout=180), *r.communicate()) for r in racers]
    assert [code for code, _, _ in results] == [0, 0], results
    assert lake_rows(env, "SELECT count(*), count(DISTINCT event_id) FROM raw.events") == [(appended, appended)]
    assert lake_rows(env, "SELECT count(*) FROM meta.store") == [(1,)]


def test_databases_created_at_once_do_not_collide(pg_server: str) -> None:
    name = f"race_{uuid.uuid4().hex[:8]}"
    barrier = threading.Barrier(6)

    def create() -> str:
        barrier.wait()
        return ensure_database(pg_server, name)

    try:
        with ThreadPoolExecutor(6) as pool:
            assert len(set(pool.map(lambda _: create(), range(6)))) == 1
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sql", ""], "holds no SQL statement"),
        (["sql", ";"], "holds no SQL statement"),
        (["diff", "cart_summary", "1", "2", "--tolerance", "total_amount=1e400"], "must be a finite number"),
    ],
)
def test_bad_arguments_get_one_line_not_a_traceback(
    args: list[str], expected: str, store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    bulk_append(store_dsn, 200, transactions=1)
    assert run("ingest", home=tmp_path, env=env)[0] == 0
    assert run("rebuild", "cart_summary", "--version", "1", home=tmp_path, env=env)[0] == 0
    assert run("rebuild", "cart_summary", "--version", "2", home=tmp_path, env=env)[0] == 0
    code, output = run(*args, home=tmp_path, env=env)
    assert code == 2 and expected in output and "Traceback" not in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_a_home_that_is_not_a_folder_is_a_one_line_terminal_error(tmp_path: Path) -> None:
    home = tmp_path / "a-file"
    home.write_text("not a folder")
    for where in (home, home / "below"):
        code, output = run("status", home=where, env={})
        assert code == 2 and "is not a folder Projectionist can write" in output, output


def test_a_wrong_kind_of_failure_is_never_retried_forever(tmp_path: Path) -> None:
    """A bad sslmode is terminal (exit 2), a refused connection transient (exit 75)."""
    code, output = run("status", home=tmp_path, env={"PROJECTIONIST_EVENT_STORE_DSN": "host=/nowhere sslmode=bogus"})
    assert code == 2 and "sslmode" in output, output
    code, output = run("status", home=tmp_path, env={"PROJECTIONIST_EVENT_STORE_DSN": "postgresql://u@127.0.0.1:1/x"})
    assert code == 75 and "transient" in output, output
