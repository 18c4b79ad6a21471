"""Fixtures for CLI tests: a lake on the test server, passed to the CLI through its environment variables."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.connection import connect, ensure_database


@pytest.fixture()
def lake_env(pg_server: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """``PROJECTIONIST_LAKE``/``_LAKE_DATA`` for a lake in a new database of the test server."""
    name = f"lake_{uuid.uuid4().hex[:12]}"
    dsn = ensure_database(pg_server, name)
    try:
        yield {"PROJECTIONIST_LAKE": dsn, "PROJECTIONIST_LAKE_DATA": str(tmp_path / "lake-data")}
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
