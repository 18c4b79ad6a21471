"""Reading never writes and never waits: a role with only the grants of docs/stores.md reads every store kind.

Each ```sql block of the doc's "A role that can only read" section is run as written (role and
database renamed for the test) against a store of its kind; then that role's own session must be
able to read the head, ingest into a lake and report the lag, and PostgreSQL must refuse it any
write (its sessions are read-only).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from eventstore.connection import connect, connect_read_only, libpq_conninfo
from eventstore.errors import ConfigurationError
from tests.warehouse.test_sources import KINDS, append_shop, opened
from warehouse.ingest import EventSource, ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import close_source
from warehouse.status import lake_status

DOC = Path(__file__).resolve().parents[2] / "docs" / "stores.md"
SECTION = DOC.read_text().split("## A role that can only read")[1].split("\n## ")[0]
GRANTS = {block.splitlines()[0].split()[1]: block for block in re.findall(r"```sql\n(.*?)```", SECTION, flags=re.S)}


def test_the_doc_gives_grants_for_every_kind() -> None:
    assert set(GRANTS) == {"native", "marten", "emmett", "eventsourcing"}


def as_role(dsn: str, role: str) -> str:
    params = libpq_conninfo(dsn)
    params["user"] = role
    params.pop("password", None)
    return conninfo.make_conninfo("", **params)


@pytest.fixture()
def reader_role(fresh_database: str) -> Iterator[str]:
    """A role name for the test's grants; dropped with them (roles belong to the server, not the database)."""
    role = f"reader_{uuid.uuid4().hex[:10]}"
    yield role
    with connect(fresh_database, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f"DROP OWNED BY {role}")  # its grants here and on the database
            conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("kind", KINDS)
def test_the_documented_grants_are_enough_to_read_ingest_and_report(
    kind: str, fresh_database: str, lake_config: LakeConfig, reader_role: str
) -> None:
    appended = append_shop(kind, fresh_database, events=200)
    database = str(libpq_conninfo(fresh_database)["dbname"])
    grants = GRANTS[kind].replace("projectionist_reader", reader_role).replace("DATABASE shop", f"DATABASE {database}")
    with connect(fresh_database, autocommit=True) as conn:
        conn.execute(grants)
    reader = as_role(fresh_database, reader_role)
    kept: list[EventSource] = []
    try:
        source = opened(kind, reader, kept)
        con = open_lake(lake_config)
        try:
            result = ingest(con, source)
            status = lake_status(con, source)
        finally:
            con.close()
    finally:
        for source in kept:
            close_source(source)
    assert result.events == appended and status.lag_events == 0
    assert status.store is not None and status.store.kind == kind


def test_read_sessions_refuse_writes_even_for_a_superuser(store_dsn: str) -> None:
    with (
        connect_read_only(store_dsn) as conn,
        pytest.raises(psycopg.errors.ReadOnlySqlTransaction),
    ):
        conn.execute("CREATE TABLE should_not_exist (id int)")


def test_without_the_grant_the_error_is_terminal_and_names_the_fix(
    fresh_database: str, reader_role: str, lake_config: LakeConfig
) -> None:
    append_shop("native", fresh_database, events=50)
    database = str(libpq_conninfo(fresh_database)["dbname"])
    with connect(fresh_database, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {reader_role} LOGIN")
        conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {reader_role}")  # no SELECT on events
    kept: list[EventSource] = []
    try:
        with pytest.raises(ConfigurationError) as caught:
            source = opened("native", as_role(fresh_database, reader_role), kept)
            con = open_lake(lake_config)
            try:
                ingest(con, source)
            finally:
                con.close()
        assert not caught.value.retryable
        assert "permission denied" in str(caught.value)
    finally:
        for source in kept:
            close_source(source)
