"""Helpers: DuckDB tables shaped exactly like the lake's raw.events, filled from demo carts or random events."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from eventstore.demo import Cart
from eventstore.positions import Checkpoint

RAW_EVENTS_COLUMNS = (
    ("global_position", "BIGINT"),
    ("transaction_id", "BIGINT"),
    ("stream_id", "VARCHAR"),
    ("stream_type", "VARCHAR"),
    ("stream_version", "BIGINT"),
    ("event_id", "VARCHAR"),
    ("event_type", "VARCHAR"),
    ("event_version", "INTEGER"),
    ("data", "JSON"),
    ("metadata", "JSON"),
    ("correlation_id", "VARCHAR"),
    ("causation_id", "VARCHAR"),
    ("recorded_at", "TIMESTAMPTZ"),
    ("ingested_at", "TIMESTAMPTZ"),
    ("source", "VARCHAR"),
    ("is_archived", "BOOLEAN"),
    ("tenant_id", "VARCHAR"),
)
INGESTED_AT = datetime(2026, 6, 1, tzinfo=UTC)


@dataclass(eq=False)
class RawEvent:
    """One row of raw.events, before it is written to DuckDB."""

    global_position: int
    transaction_id: int
    stream_id: str
    stream_version: int
    event_type: str
    data: dict[str, Any] | str  # a str is written as it is (to store malformed JSON in a VARCHAR table)
    recorded_at: datetime
    event_version: int = 1
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.transaction_id, self.global_position)


def to_json(data: dict[str, Any] | str) -> str:
    if isinstance(data, str):
        return data
    # Prices are JSON numbers with two decimals, as PostgreSQL jsonb stores the demo's Decimals.
    return json.dumps(data, default=lambda v: float(v) if isinstance(v, Decimal) else str(v))


def create_raw_events(con: duckdb.DuckDBPyConnection, name: str = "events", *, data_type: str = "JSON") -> None:
    """Create an empty table shaped like raw.events (``data_type`` VARCHAR admits malformed JSON)."""
    columns = ", ".join(f"{c} {data_type if c == 'data' else t}" for c, t in RAW_EVENTS_COLUMNS)
    con.execute(f"CREATE OR REPLACE TABLE {name} ({columns})")


def insert_raw_events(con: duckdb.DuckDBPyConnection, events: Iterable[RawEvent], name: str = "events") -> None:
    rows = list(events)
    if not rows:
        return
    table = pa.table(
        {
            "global_position": [e.global_position for e in rows],
            "transaction_id": [e.transaction_id for e in rows],
            "stream_id": [e.stream_id for e in rows],
            "stream_type": ["cart"] * len(rows),
            "stream_version": [e.stream_version for e in rows],
            "event_id": [e.event_id for e in rows],
            "event_type": [e.event_type for e in rows],
            "event_version": pa.array([e.event_version for e in rows], pa.int32()),
            "data": [to_json(e.data) for e in rows],
            "metadata": [json.dumps(e.metadata) for e in rows],
            "correlation_id": [e.metadata.get("correlation_id") for e in rows],
            "causation_id": [e.metadata.get("causation_id") for e in rows],
            "recorded_at": pa.array([e.recorded_at for e in rows], pa.timestamp("us", tz="UTC")),
        }
    )
    con.register("new_raw_events", table)
    try:
        con.execute(
            f"INSERT INTO {name} BY NAME SELECT *, {_literal(INGESTED_AT)} AS ingested_at, 'native' AS source, "
            "false AS is_archived, CAST(NULL AS VARCHAR) AS tenant_id FROM new_raw_events"
        )
    finally:
        con.unregister("new_raw_events")


def _literal(moment: datetime) -> str:
    return f"TIMESTAMPTZ '{moment.isoformat()}'"


def shop_events(carts: Sequence[Cart], *, writers: int = 4, per_transaction: int = 20, seed: int = 0) -> list[RawEvent]:
    """The events of ``carts`` as the demo's concurrent writers would store them.

    Writer w appends carts[w::writers], step k of all its carts before step k+1, ``per_transaction``
    streams per transaction. Transactions take their ids in one interleaving of the writers and their
    positions in another (an INSERT takes positions when it runs, the id when the transaction starts),
    so position order and (transaction_id, global_position) order differ, as in PostgreSQL.
    """
    rng = random.Random(seed)
    queues: list[list[list[tuple[str, int, Any]]]] = []
    for w in range(writers):
        share = carts[w::writers]
        queue = []
        depth = max((len(c.steps) for c in share), default=0)
        versions: dict[str, int] = {}
        for step in range(depth):
            pending = [c for c in share if step < len(c.steps)]
            for i in range(0, len(pending), per_transaction):
                transaction = []
                for cart in pending[i : i + per_transaction]:
                    for event in cart.steps[step]:
                        versions[cart.stream_id] = versions.get(cart.stream_id, 0) + 1
                        transaction.append((cart.stream_id, versions[cart.stream_id], event))
                queue.append(transaction)
        queues.append(queue)

    def interleave() -> list[tuple[int, int]]:
        heads = [0] * len(queues)
        order = []
        while True:
            ready = [w for w in range(len(queues)) if heads[w] < len(queues[w])]
            if not ready:
                return order
            w = rng.choice(ready)
            order.append((w, heads[w]))
            heads[w] += 1

    txids = {slot: 1000 + i for i, slot in enumerate(interleave())}
    rows = []
    position = 0
    for slot in interleave():
        w, i = slot
        for stream_id, version, event in queues[w][i]:
            position += 1
            assert event.recorded_at is not None
            rows.append(
                RawEvent(
                    global_position=position,
                    transaction_id=txids[slot],
                    stream_id=stream_id,
                    stream_version=version,
                    event_type=event.event_type,
                    event_version=event.event_version,
                    data=dict(event.data),
                    recorded_at=event.recorded_at,
                    event_id=str(event.event_id),
                    metadata=dict(event.metadata),
                )
            )
    rows.sort(key=lambda e: (e.transaction_id, e.global_position))
    return rows


def load_shop(con: duckdb.DuckDBPyConnection, carts: Sequence[Cart], name: str = "events") -> list[RawEvent]:
    """Create table ``name`` shaped like raw.events holding ``carts``; return its rows in reading order."""
    rows = shop_events(carts)
    create_raw_events(con, name)
    insert_raw_events(con, rows, name)
    return rows
