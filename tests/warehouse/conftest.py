"""Fixtures for the lake: a DuckLake with its catalog in a fresh PostgreSQL database of the test server."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks._lake_data import bulk_append
from eventstore.adapters import NativeAdapter
from eventstore.connection import connect, ensure_database
from projections import Registry
from warehouse.lake import LakeConfig
from warehouse.sources import StoreSource


@pytest.fixture()
def lake_config(pg_server: str, tmp_path: Path) -> Iterator[LakeConfig]:
    """A lake whose catalog is a new database on the test server and whose data is under tmp_path."""
    name = f"lake_{uuid.uuid4().hex[:12]}"
    dsn = ensure_database(pg_server, name)
    try:
        yield LakeConfig("postgres", dsn, str(tmp_path / "lake-data") + "/")
    finally:
        with connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def source(store_dsn: str) -> Iterator[StoreSource]:
    """The native store of the test as an ingest source."""
    with NativeAdapter(store_dsn) as reader:
        yield StoreSource(reader)


def append_shop(dsn: str, events: int, seed: int = 7, transactions: int = 6) -> int:
    """Append about ``events`` shop events in several transactions (SQL-side, fast); return how many."""
    return bulk_append(dsn, events, transactions=transactions, seed=seed)


def store_ids(dsn: str) -> list[str]:
    """Event ids of the store in checkpoint order."""
    with connect(dsn) as conn:
        rows = conn.execute("SELECT event_id::text FROM events ORDER BY transaction_id, global_position").fetchall()
    return [str(r[0]) for r in rows]


def with_projection(registry: Registry, name: str, version: int, **changes: object) -> Registry:
    """``registry`` with projection ``name`` v``version`` changed as given (same upcasters)."""
    projections = {(p.name, p.version): p for p in registry}
    projections[(name, version)] = dataclasses.replace(projections[(name, version)], **changes)  # type: ignore[arg-type]
    return Registry(projections, registry.upcasters, registry.closing_events, registry.fields)
