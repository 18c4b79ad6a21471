"""Fixtures for CLI tests: a lake on the test server, passed to the CLI through its environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eventstore.connection import connect, ensure_database
from eventstore.settings import Settings
from pipelines.resources import ProjectionistResource
from projections import Registry, discover


@contextmanager
def new_lake_env(pg_server: str, data: Path) -> Iterator[dict[str, str]]:
    """``PROJECTIONIST_LAKE``/``_LAKE_DATA`` for a lake in a new database of the test server, files in ``data``."""
    name = f"lake_{uuid.uuid4().hex[:12]}"
    dsn = ensure_database(pg_server, name)
    try:
        yield {"PROJECTIONIST_LAKE": dsn, "PROJECTIONIST_LAKE_DATA": str(data)}
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def lake_env(pg_server: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A lake of its own for the test (:func:`new_lake_env`, files under ``tmp_path/lake-data``)."""
    with new_lake_env(pg_server, tmp_path / "lake-data") as env:
        yield env


def cli_process(
    args: list[str], home: Path, env: dict[str, str], *, merge_stderr: bool = False
) -> subprocess.Popen[str]:
    """``projectionist --home HOME ARGS`` in a process of its own (stderr into stdout with ``merge_stderr``)."""
    return subprocess.Popen(
        [sys.executable, "-c", "from pipelines.cli import main; main()", "--home", str(home), *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
    )


def resource_for(store_dsn: str, lake_env: dict[str, str], home: Path) -> ProjectionistResource:
    """The Dagster resource of a test: its store, its lake, its home."""
    return ProjectionistResource(
        home=str(home),
        event_store_dsn=store_dsn,
        lake=lake_env["PROJECTIONIST_LAKE"],
        lake_data=lake_env["PROJECTIONIST_LAKE_DATA"],
    )


def follow_settings(store_dsn: str, home: Path, lake_env: dict[str, str]) -> Settings:
    """The settings a test's ``Follower`` runs with: its store, its lake, its home."""
    return Settings(
        home=home, event_store_dsn=store_dsn, lake=lake_env["PROJECTIONIST_LAKE"],
        lake_data=lake_env["PROJECTIONIST_LAKE_DATA"],
    )  # fmt: skip


def carts_only() -> Registry:
    """The bundled registry with cart_summary alone (a follow with no wide lane)."""
    shop = discover(bundled=True, folder=None)
    return Registry({(p.name, p.version): p for p in shop if p.name == "cart_summary"}, shop.upcasters)
