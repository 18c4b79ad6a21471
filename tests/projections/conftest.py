"""Fixtures for projection tests: an in-memory DuckDB and a demo shop loaded as raw.events."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from eventstore.demo import Cart, generate_carts
from eventstore.duckdb_connections import new_connection
from projections import Registry, discover
from tests.projections.rawevents import RawEvent, load_shop


@pytest.fixture()
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """A fresh in-memory DuckDB connection."""
    connection = new_connection()
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The bundled projections and upcasters."""
    return discover(bundled=True, folder=None)


@pytest.fixture(scope="session")
def carts() -> list[Cart]:
    """A demo shop of about 4000 events."""
    return list(generate_carts(4000, seed=11))


@pytest.fixture()
def shop(con: duckdb.DuckDBPyConnection, carts: list[Cart]) -> list[RawEvent]:
    """Table ``events`` on ``con``, shaped like raw.events, holding ``carts``; its rows in reading order."""
    return load_shop(con, carts)
