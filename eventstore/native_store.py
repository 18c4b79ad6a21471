"""The native event store: its table, created idempotently, and the append API.

Contract (DESIGN.md): one row per event, ``global_position`` from an identity column,
``transaction_id`` the writer's ``pg_current_xact_id()``, optimistic concurrency through
``unique (stream_id, stream_version)``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from eventstore.errors import ConcurrencyError, InvalidEventError
from eventstore.settings import validate_identifier

__all__ = ["NewEvent", "StreamAppend", "append", "append_streams", "create_schema", "table_ref"]


def table_ref(schema: str = "public", table: str = "events") -> sql.Composed:
    """A safely quoted ``schema.table`` for the native store."""
    validate_identifier(schema, "event store schema")
    validate_identifier(table, "event store table")
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    stream_type     text        NOT NULL,
    stream_version  bigint      NOT NULL,
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    event_version   int         NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{{}}',
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, stream_version)
);
-- The gap-safe reader walks (transaction_id, global_position) from a checkpoint.
CREATE INDEX IF NOT EXISTS {index} ON {table} (transaction_id, global_position);
"""


def create_schema(conn: psycopg.Connection[Any], schema: str = "public", table: str = "events") -> None:
    """Create the native event table and its reader index if they do not exist (idempotent)."""
    ddl = sql.SQL(_DDL).format(
        schema=sql.Identifier(schema),
        table=table_ref(schema, table),
        index=sql.Identifier(f"{table}_transaction_position_idx"),
    )
    with conn.transaction():
        # Serialize concurrent `init`s: CREATE ... IF NOT EXISTS is not race-free in PostgreSQL.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('projectionist.create_schema'))")
        conn.execute(ddl)


@dataclass(frozen=True)
class NewEvent:
    """An event to append. ``data`` must be a JSON object; numbers may be Decimal."""

    event_type: str
    data: Mapping[str, Any]
    event_version: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    recorded_at: datetime | None = None  # None: the server's clock_timestamp()


@dataclass(frozen=True)
class StreamAppend:
    """Events for one stream, expected to follow ``expected_version`` (0: a new stream; None: any)."""

    stream_id: str
    stream_type: str
    events: Sequence[NewEvent]
    expected_version: int | None = None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        # float keeps the shortest repr of a 2-place decimal ("12.34"); jsonb stores it as numeric.
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _check_floats(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a JSON number")
    if isinstance(value, Mapping):
        for item in value.values():
            _check_floats(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_floats(item)


def _to_json(value: Any, what: str, stream_id: str, event: NewEvent) -> str:
    if not isinstance(value, Mapping):
        raise InvalidEventError(
            f"{what} of {event.event_type} event {event.event_id} in stream {stream_id!r} is a "
            f"{type(value).__name__}, not a JSON object: pass a dict. Nothing was written."
        )
    try:
        _check_floats(value)
        return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidEventError(
            f"{what} of {event.event_type} event {event.event_id} in stream {stream_id!r} cannot "
            f"be stored as JSON: {exc}. Nothing was written."
        ) from exc


def _validate(append: StreamAppend) -> None:
    if not append.stream_id or not append.stream_type:
        raise InvalidEventError("stream_id and stream_type must be non-empty. Nothing was written.")
    for event in append.events:
        if not event.event_type:
            raise InvalidEventError(f"an event of stream {append.stream_id!r} has no event_type.")
        if event.event_version < 1:
            raise InvalidEventError(f"{event.event_type} in stream {append.stream_id!r}: event_version must be >= 1.")


_INSERT = """
INSERT INTO {table} (stream_id, stream_type, stream_version, event_id, event_type, event_version,
                     data, metadata, recorded_at)
SELECT s, st, v, e, et, ev, d::jsonb, m::jsonb, coalesce(r, clock_timestamp())
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::uuid[], %s::text[], %s::int[],
            %s::text[], %s::text[], %s::timestamptz[]) WITH ORDINALITY
     AS u(s, st, v, e, et, ev, d, m, r, n)
ORDER BY n
"""


def append_streams(
    conn: psycopg.Connection[Any],
    appends: Sequence[StreamAppend],
    *,
    schema: str = "public",
    table: str = "events",
) -> dict[str, int]:
    """Append events to several streams in one transaction (a savepoint if one is open).

    Returns each stream's new version. Raises ConcurrencyError if a stream is not at its
    expected version (checked up front, and by the unique constraint against racing writers),
    InvalidEventError for a malformed event; in both cases nothing of the call is written.
    """
    columns: list[list[Any]] = [[] for _ in range(9)]
    for append in appends:
        _validate(append)
    ids = sorted({a.stream_id for a in appends})
    ref = table_ref(schema, table)
    with conn.transaction():
        current: dict[str, int] = dict.fromkeys(ids, 0)
        if ids:
            rows = conn.execute(
                sql.SQL("SELECT stream_id, max(stream_version) FROM {} WHERE stream_id = ANY(%s) GROUP BY 1").format(
                    ref
                ),
                (ids,),
            ).fetchall()
            current.update({row[0]: int(row[1]) for row in rows})
        for append in appends:
            version = current[append.stream_id]
            if append.expected_version is not None and append.expected_version != version:
                raise ConcurrencyError(append.stream_id, append.expected_version, version)
            for event in append.events:
                version += 1
                for column, value in zip(
                    columns,
                    (
                        append.stream_id,
                        append.stream_type,
                        version,
                        event.event_id,
                        event.event_type,
                        event.event_version,
                        _to_json(event.data, "data", append.stream_id, event),
                        _to_json(event.metadata, "metadata", append.stream_id, event),
                        event.recorded_at,
                    ),
                    strict=True,
                ):
                    column.append(value)
            current[append.stream_id] = version
        if columns[0]:
            try:
                with conn.transaction():
                    conn.execute(sql.SQL(_INSERT).format(table=ref), columns)
            except psycopg.errors.UniqueViolation as exc:
                constraint = exc.diag.constraint_name or ""
                if "event_id" in constraint:
                    raise InvalidEventError(
                        f"an event id is already stored ({exc.diag.message_detail}): event ids are "
                        "unique; was this batch appended before? Nothing was written."
                    ) from exc
                stream = _stream_of_conflict(exc, ids)
                raise ConcurrencyError(stream, _expected(appends, stream), None) from exc
    return current


def _stream_of_conflict(exc: psycopg.errors.UniqueViolation, ids: Sequence[str]) -> str:
    detail = exc.diag.message_detail or ""
    for stream_id in ids:
        if f"({stream_id}," in detail:
            return stream_id
    return ids[0] if ids else "?"


def _expected(appends: Sequence[StreamAppend], stream_id: str) -> int | None:
    return next((a.expected_version for a in appends if a.stream_id == stream_id), None)


def append(
    conn: psycopg.Connection[Any],
    stream_id: str,
    stream_type: str,
    events: Sequence[NewEvent],
    *,
    expected_version: int | None = None,
    schema: str = "public",
    table: str = "events",
) -> int:
    """Append ``events`` to one stream with optimistic concurrency; return the new stream version."""
    versions = append_streams(
        conn, [StreamAppend(stream_id, stream_type, events, expected_version)], schema=schema, table=table
    )
    return versions[stream_id]
