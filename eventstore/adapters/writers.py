"""Append events the way each foreign store does: for tests and ``projectionist demo --store``.

- Marten cannot run here, so :func:`create_marten_schema` creates its tables as Marten's
  source defines them (``EventsTable``, ``StreamsTable``, sequence ``mt_events_sequence``) and
  :func:`marten_append` does what Marten's ``mt_quick_append_events`` function does: read the
  stream's version, insert the stream row if new, insert each event with
  ``nextval('mt_events_sequence')`` (the position is taken at INSERT), update the stream's
  version — inside the caller's transaction, which commits later.
- Emmett: :func:`run_emmett_writer` drives Emmett's own package through the node script in
  ``emmett_writer/`` (``npm ci`` there first); :func:`emmett_append` calls Emmett's own
  ``emt_append_to_stream`` SQL function in the caller's transaction (what Emmett's
  ``appendToStream`` runs), for tests that must hold a transaction open from Python.
- ``eventsourcing``: the library's own ``Application`` (:mod:`eventstore.adapters.eventsourcing_shop`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from eventstore.connection import libpq_conninfo
from eventstore.demo import Cart, DemoResult, generate_carts, run_writers
from eventstore.errors import ConcurrencyError, ConfigurationError
from eventstore.native_store import NewEvent
from eventstore.settings import validate_identifier

__all__ = [
    "EMMETT_WRITER_DIR",
    "EmmettAppend",
    "append_demo_shop_emmett",
    "append_demo_shop_marten",
    "append_demo_shop_store",
    "create_marten_schema",
    "emmett_append",
    "emmett_connection_string",
    "marten_append",
    "marten_type_alias",
    "run_emmett_writer",
    "start_emmett_writer",
]

EMMETT_WRITER_DIR = Path(__file__).parent / "emmett_writer"

# -- Marten --------------------------------------------------------------------------------

_MARTEN_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE SEQUENCE IF NOT EXISTS {sequence};
CREATE TABLE IF NOT EXISTS {streams} (
    id               uuid        NOT NULL,
    type             varchar     NULL,
    version          bigint      NULL,
    timestamp        timestamptz NOT NULL DEFAULT (now()),
    created          timestamptz NOT NULL DEFAULT (now()),
    tenant_id        varchar     NULL DEFAULT '*DEFAULT*',
    is_archived      bool        NULL DEFAULT FALSE,
    CONSTRAINT pkey_mt_streams_id PRIMARY KEY (id)
);
CREATE TABLE IF NOT EXISTS {events} (
    seq_id           bigint       NOT NULL,
    id               uuid         NOT NULL,
    stream_id        uuid         NULL,
    version          bigint       NOT NULL,
    data             jsonb        NOT NULL,
    bdata            bytea        NULL,
    type             varchar(500) NOT NULL,
    timestamp        timestamptz  NOT NULL DEFAULT (now()),
    tenant_id        varchar      NULL DEFAULT '*DEFAULT*',
    mt_dotnet_type   varchar      NULL,
    {metadata_columns}
    is_archived      bool         NULL DEFAULT FALSE,
    CONSTRAINT pkey_mt_events_seq_id PRIMARY KEY (seq_id),
    CONSTRAINT fkey_mt_events_stream_id FOREIGN KEY (stream_id) REFERENCES {streams} (id) ON DELETE CASCADE
);
ALTER SEQUENCE {sequence} OWNED BY {events}.seq_id;
CREATE UNIQUE INDEX IF NOT EXISTS pk_mt_events_stream_and_version ON {events} (stream_id, version);
"""

_MARTEN_METADATA = """correlation_id   varchar      NULL,
    causation_id     varchar      NULL,
    headers          jsonb        NULL,"""


def create_marten_schema(conn: psycopg.Connection[Any], schema: str = "public", *, metadata: bool = True) -> None:
    """Create Marten's event tables as Marten does (guid stream ids, single tenancy); idempotent.

    ``metadata``: the optional ``correlation_id``/``causation_id``/``headers`` columns
    (Marten adds them when ``Events.MetadataConfig`` enables them).
    """
    validate_identifier(schema, "Marten schema")
    ddl = sql.SQL(_MARTEN_DDL.replace("{metadata_columns}", _MARTEN_METADATA if metadata else "")).format(
        schema=sql.Identifier(schema),
        sequence=sql.Identifier(schema, "mt_events_sequence"),
        streams=sql.Identifier(schema, "mt_streams"),
        events=sql.Identifier(schema, "mt_events"),
    )
    with conn.transaction():
        conn.execute(ddl)


def marten_type_alias(event_type: str, event_version: int = 1) -> str:
    """Marten's event type alias (snake case) for an event type and version: ItemAdded v2 → item_added_v2."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in event_type).lstrip("_")
    return snake if event_version <= 1 else f"{snake}_v{event_version}"


def marten_append(
    conn: psycopg.Connection[Any],
    stream_id: uuid.UUID,
    aggregate_type: str,
    events: Sequence[NewEvent],
    *,
    schema: str = "public",
    tenant_id: str = "*DEFAULT*",
    expected_version: int | None = None,
    metadata: bool = True,
) -> list[int]:
    """Append ``events`` to a Marten stream in ``conn``'s current transaction; return their ``seq_id``s.

    Event types are stored as Marten aliases (:func:`marten_type_alias`); correlation and
    causation ids from each event's metadata go to Marten's columns, the rest to ``headers``.
    """
    validate_identifier(schema, "Marten schema")
    streams = sql.Identifier(schema, "mt_streams")
    events_table = sql.Identifier(schema, "mt_events")
    sequence = f"{schema}.mt_events_sequence"
    row = conn.execute(
        sql.SQL("SELECT version, is_archived FROM {} WHERE id = %s FOR UPDATE").format(streams), (stream_id,)
    ).fetchone()
    version = int(row[0]) if row and row[0] is not None else 0
    if expected_version is not None and expected_version != version:
        raise ConcurrencyError(str(stream_id), expected_version, version)
    if row is None:
        conn.execute(
            sql.SQL("INSERT INTO {} (id, type, version, timestamp, tenant_id) VALUES (%s, %s, 0, now(), %s)").format(
                streams
            ),
            (stream_id, aggregate_type, tenant_id),
        )
    positions: list[int] = []
    for event in events:
        version += 1
        extra = {k: v for k, v in event.metadata.items() if k not in ("correlation_id", "causation_id")}
        columns = ["seq_id", "id", "stream_id", "version", "data", "type", "tenant_id", "mt_dotnet_type", "is_archived"]
        values: list[Any] = [
            event.event_id,
            stream_id,
            version,
            json.dumps(dict(event.data), default=_json_default),
            marten_type_alias(event.event_type, event.event_version),
            tenant_id,
            f"Shop.Events.{event.event_type}, Shop",
            False,
        ]
        if metadata:
            columns += ["correlation_id", "causation_id", "headers"]
            values += [
                event.metadata.get("correlation_id"),
                event.metadata.get("causation_id"),
                json.dumps(extra) if extra else None,
            ]
        if event.recorded_at is not None:
            columns.append("timestamp")
            values.append(event.recorded_at)
        inserted = conn.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES (nextval(%s), {}) RETURNING seq_id").format(
                events_table,
                sql.SQL(", ").join(sql.Identifier(c) for c in columns),
                sql.SQL(", ").join(sql.Placeholder() * len(values)),
            ),
            [sequence, *values],
        ).fetchone()
        assert inserted is not None
        positions.append(int(inserted[0]))
    conn.execute(
        sql.SQL("UPDATE {} SET version = %s, timestamp = now() WHERE id = %s").format(streams), (version, stream_id)
    )
    return positions


def _json_default(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- Emmett --------------------------------------------------------------------------------


def emmett_connection_string(dsn: str) -> str:
    """The ``postgresql://user:password@host:port/db`` form Emmett's package takes (sockets as ``?host=``)."""
    params = libpq_conninfo(dsn)
    user = quote(str(params.get("user") or ""), safe="")
    password = quote(str(params.get("password") or ""), safe="")
    host = str(params.get("host") or "")
    port = str(params.get("port") or "")
    db = quote(str(params.get("dbname") or "postgres"), safe="")
    if host.startswith("/"):
        query = f"?host={quote(host, safe='/')}" + (f"&port={port}" if port else "")
        return f"postgresql://{user}:{password}@/{db}{query}"
    netloc = f"{host or 'localhost'}" + (f":{port}" if port else "")
    return f"postgresql://{user}:{password}@{netloc}/{db}"


@dataclass(frozen=True)
class EmmettAppend:
    """One append for the node writer: events as ``{"type", "data", "metadata"}`` dicts."""

    stream: str
    events: Sequence[Mapping[str, Any]]
    expected_version: int | None = None

    def command(self) -> str:
        body: dict[str, Any] = {"stream": self.stream, "events": list(self.events)}
        if self.expected_version is not None:
            body["expectedVersion"] = self.expected_version
        return json.dumps(body, default=_json_default)


def _node_writer() -> list[str]:
    node = shutil.which("node")
    if node is None:
        raise ConfigurationError("Node.js (node) is not on PATH: Emmett's writer needs Node.js 20.")
    if not (EMMETT_WRITER_DIR / "node_modules" / "@event-driven-io" / "emmett-postgresql").exists():
        raise ConfigurationError(
            f"Emmett's package is not installed: run `npm ci --prefix {EMMETT_WRITER_DIR}` (the CI script does)."
        )
    return [node, str(EMMETT_WRITER_DIR / "writer.mjs")]


def run_emmett_writer(dsn: str, appends: Iterable[EmmettAppend], *, timeout: float = 300) -> int:
    """Append through Emmett's own package (one node process, appends to different streams concurrent).

    Returns the number of events appended. Appends to one stream keep their order.
    """
    stdin = "".join(a.command() + "\n" for a in appends)
    done = subprocess.run(
        [*_node_writer(), emmett_connection_string(dsn)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigurationError(f"Emmett's writer failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    last = json.loads(done.stdout.strip().splitlines()[-1])
    return int(last["done"])


def start_emmett_writer(dsn: str) -> subprocess.Popen[str]:
    """A node writer process reading commands on stdin (for tests that hold an append open)."""
    return subprocess.Popen(
        [*_node_writer(), emmett_connection_string(dsn)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def emmett_append(
    conn: psycopg.Connection[Any],
    stream: str,
    events: Sequence[Mapping[str, Any]],
    *,
    expected_version: int | None = None,
    schema_version: str = "1",
) -> list[str]:
    """Call Emmett's ``emt_append_to_stream`` in ``conn``'s transaction; return the message ids."""
    ids = [str(uuid.uuid4()) for _ in events]
    row = conn.execute(
        "SELECT success FROM emt_append_to_stream(%s::text[], %s::jsonb[], %s::jsonb[], %s::text[], %s::text[], "
        "%s::text[], %s, %s, %s, 'emt:default')",
        (
            ids,
            [json.dumps(e.get("data", {}), default=_json_default) for e in events],
            [json.dumps(e.get("metadata", {}), default=_json_default) for e in events],
            [str(e.get("schemaVersion", schema_version)) for e in events],
            [str(e["type"]) for e in events],
            ["E"] * len(events),
            stream,
            stream.split("-", 1)[0],
            expected_version,
        ),
    ).fetchone()
    if not row or not row[0]:
        raise ConcurrencyError(stream, expected_version, None)
    return ids


# -- the demo shop through each store's own writer ------------------------------------------


def append_demo_shop_marten(
    dsn: str, *, events: int = 1_000, seed: int = 42, writers: int = 2, schema: str = "public"
) -> DemoResult:
    """Append the demo shop into Marten's tables (created if missing) with ``writers`` concurrent writers."""
    from eventstore.connection import connect

    with connect(dsn) as conn:
        create_marten_schema(conn, schema)
    carts = list(generate_carts(events, seed))
    return _concurrently(
        carts,
        writers,
        lambda conn, cart, step: marten_append(
            conn, uuid.UUID(cart.stream_id.removeprefix("cart-")), "cart", cart.steps[step], schema=schema
        ),
        dsn,
    )


def append_demo_shop_emmett(dsn: str, *, events: int = 1_000, seed: int = 42) -> DemoResult:
    """Append the demo shop through Emmett's own package (node writer; streams appended concurrently)."""
    started = time.perf_counter()
    carts = list(generate_carts(events, seed))
    appends = [
        EmmettAppend(
            cart.stream_id,
            [
                {
                    "type": e.event_type,
                    "data": dict(e.data),
                    "metadata": {
                        "correlationId": e.metadata.get("correlation_id"),
                        "causationId": e.metadata.get("causation_id"),
                    },
                    "schemaVersion": e.event_version,
                }
                for e in cart.steps[k]
            ],
            sum(len(s) for s in cart.steps[:k]),
        )
        for k in range(max(len(c.steps) for c in carts))
        for cart in carts
        if k < len(cart.steps)
    ]
    count = run_emmett_writer(dsn, appends)
    return DemoResult(len(carts), count, len(appends), time.perf_counter() - started)


def _append_demo_shop_eventsourcing(dsn: str, *, events: int = 1_000, seed: int = 42) -> DemoResult:
    try:
        from eventstore.adapters.eventsourcing_shop import append_demo_shop_eventsourcing
    except ImportError as exc:  # an optional dependency: imported only when this writer runs
        raise ConfigurationError(
            "the eventsourcing library is not installed: `uv sync --extra stores` (or pip install "
            "'projectionist[stores]')."
        ) from exc
    return append_demo_shop_eventsourcing(dsn, events=events, seed=seed)


#: The demo shop's writer of each foreign store kind, through that store's own client (the native
#: store's is :func:`eventstore.demo.append_demo_shop`). A new kind adds its writer here.
DEMO_WRITERS: dict[str, Callable[..., DemoResult]] = {
    "marten": append_demo_shop_marten,
    "emmett": append_demo_shop_emmett,
    "eventsourcing": _append_demo_shop_eventsourcing,
}


def append_demo_shop_store(kind: str, dsn: str, *, events: int = 1_000, seed: int = 42) -> DemoResult:
    """Append the demo shop with the writer of store ``kind`` (one of :data:`DEMO_WRITERS`)."""
    writer = DEMO_WRITERS.get(kind)
    if writer is None:
        raise ConfigurationError(f"no demo writer for store kind {kind!r}: use {', '.join(DEMO_WRITERS)}.")
    return writer(dsn, events=events, seed=seed)


def _concurrently(
    carts: Sequence[Cart],
    writers: int,
    append_step: Callable[[psycopg.Connection[Any], Cart, int], object],
    dsn: str,
) -> DemoResult:
    """Each writer thread appends step k of its carts before step k+1, one transaction per step."""
    from eventstore.connection import connect

    transactions = [0] * writers
    started = time.perf_counter()

    def write(worker: int, share: Sequence[Cart]) -> None:
        with connect(dsn) as conn:
            for step in range(max((len(c.steps) for c in share), default=0)):
                for cart in share:
                    if step < len(cart.steps):
                        with conn.transaction():
                            append_step(conn, cart, step)
                        transactions[worker] += 1

    run_writers([carts[w::writers] for w in range(writers)], write)
    return DemoResult(
        streams=len(carts),
        events=sum(len(c.events) for c in carts),
        transactions=sum(transactions),
        seconds=time.perf_counter() - started,
    )
