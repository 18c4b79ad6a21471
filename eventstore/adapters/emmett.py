"""Emmett (npm ``@event-driven-io/emmett-postgresql``): table ``emt_messages``.

Mapping to the lake's columns (only ``message_kind = 'E'``: Emmett also stores commands and
other message kinds in the same table):

=================  ===================================================================
lake column        Emmett
=================  ===================================================================
global_position    ``global_position`` (sequence ``emt_global_message_position``)
transaction_id     ``transaction_id`` (xid8, ``pg_current_xact_id()`` of the appender)
stream_id          ``stream_id`` (the stream name)
stream_type        the stream name's prefix before the first ``-`` (Emmett's ``type-id``
                   convention); the whole name when it has no ``-``
stream_version     ``stream_position``
event_id           ``message_id``
event_type         ``message_type``
event_version      ``message_schema_version`` as an integer (1 when it is not a number)
data               ``message_data``; a payload that is not a JSON object is a bad row
                   (``data`` null, ``metadata.decode_error`` says what was found)
metadata           ``message_metadata`` plus ``correlation_id``/``causation_id`` copied from
                   Emmett's ``correlationId``/``causationId`` when present
recorded_at        ``created``
is_archived        ``is_archived``
tenant_id          ``partition``, null for Emmett's default partition ``emt:default``
=================  ===================================================================

Gap safety (``gap_safety = "transaction-snapshot"``): exactly the native reader's. Emmett writes
``pg_current_xact_id()`` into every row, so the adapter reads only rows whose
``transaction_id`` is below ``pg_snapshot_xmin(pg_current_snapshot())`` in
``(transaction_id, global_position)`` order. Every transaction below that bound has ended, no
later one can get a smaller id, so the rows below it never change; Emmett's own processors
read the same way. Archiving flips ``is_archived`` but keeps ``transaction_id``, so an
archived event is never read twice.

Archiving (``projectionist archive --in-store``) sets Emmett's own ``is_archived`` on every message
of the stream (and on its ``emt_streams`` row, where that table has the flag). The column is part
of the primary key and of Emmett's partitioning, so PostgreSQL moves the row to the archived
partition; ``transaction_id`` and ``global_position`` are values and stay as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from eventstore.adapters._base import (
    ArchiveNotSupportedError,
    CatalogTable,
    SqlAdapter,
    StoreArchive,
    StreamFingerprint,
    archive_verified,
    event_fingerprint_sql,
    snapshot_head,
)
from eventstore.errors import ConfigurationError
from eventstore.positions import START, Checkpoint, Head
from eventstore.quoting import quote_literal

__all__ = ["DEFAULT_PARTITION", "EmmettAdapter"]

DEFAULT_PARTITION = "emt:default"

_SELECT = """
SELECT m.global_position,
       m.transaction_id::text::bigint AS transaction_id,
       m.stream_id,
       split_part(m.stream_id, '-', 1) AS stream_type,
       m.stream_position AS stream_version,
       m.message_id AS event_id,
       m.message_type AS event_type,
       CASE WHEN m.message_schema_version ~ '^[0-9]{{1,9}}$' THEN m.message_schema_version::int ELSE 1 END
           AS event_version,
       CASE WHEN jsonb_typeof(m.message_data) = 'object' THEN m.message_data::text END AS data,
       (CASE WHEN jsonb_typeof(m.message_data) IS DISTINCT FROM 'object' THEN jsonb_build_object('decode_error',
            format('{table_name} global_position %s: message_data is a JSON %s, not an object',
                   m.global_position, coalesce(jsonb_typeof(m.message_data), 'null')))
        ELSE (CASE WHEN jsonb_typeof(m.message_metadata) = 'object' THEN m.message_metadata ELSE '{{}}'::jsonb END
              || jsonb_strip_nulls(jsonb_build_object(
                     'correlation_id', m.message_metadata ->> 'correlationId',
                     'causation_id', m.message_metadata ->> 'causationId')))
        END)::text AS metadata,
       m.created AS recorded_at,
       m.is_archived,
       NULLIF(m.partition, {default_partition}) AS tenant_id
FROM {table} AS m
WHERE m.message_kind = 'E'
  AND (m.transaction_id, m.global_position) > ('{tx}'::xid8, {pos})
  AND m.transaction_id < '{bound}'::xid8
ORDER BY m.transaction_id, m.global_position{limit}
"""

_WANTED = {
    "global_position": "bigint",
    "transaction_id": "xid8",
    "stream_id": "text",
    "stream_position": "bigint",
    "message_kind": "char",
    "message_data": "jsonb",
    "message_metadata": "jsonb",
    "message_schema_version": "text",
    "message_type": "text",
    "message_id": "text",
    "is_archived": "boolean",
    "partition": "text",
    "created": "timestamp with time zone",
}


class EmmettAdapter(SqlAdapter):
    """Reads the events of an Emmett ``emt_messages`` table by transaction snapshot."""

    kind = "emmett"
    gap_safety = "transaction-snapshot"
    own_tenant = "its partition column"
    bound_kind = "transaction_id"
    table = "emt_messages"

    @classmethod
    def recognize(cls, table: CatalogTable) -> str | None:
        """``emt_messages`` with an ``xid8`` transaction id and a message kind; ``emt_events`` before 0.38."""
        if table.name == "emt_messages" and table.columns.get("transaction_id") == "xid8":
            return cls.kind if "message_kind" in table.columns else None
        return "emmett (before 0.38: emt_events)" if table.name == "emt_events" else None

    def __init__(self, dsn: str, schema: str = "public") -> None:
        super().__init__(dsn, schema)
        if not self.columns("emt_messages") and self.columns("emt_events"):
            raise ConfigurationError(
                f"{schema}.emt_events is the table of an Emmett release before 0.38; this adapter reads "
                "emt_messages: start the application once with a current @event-driven-io/emmett-postgresql "
                "(it renames the table) and retry."
            )
        found = self.require_columns("emt_messages", {k: v for k, v in _WANTED.items() if k != "message_kind"}, "")
        if not found.get("message_kind", "").startswith(("char", "character")):
            raise ConfigurationError(f"{schema}.emt_messages has no message_kind column: is it an Emmett table?")
        self.table_sql = self.ref("emt_messages")

    def head(self, after: Checkpoint = START) -> Head:
        """The safe head: the snapshot's xmin and the last event (not command) below it."""
        return self.in_session(lambda conn: snapshot_head(conn, self.table_sql, "e.message_kind = 'E'"))

    def query(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The PostgreSQL query for settled events after ``after`` below transaction ``bound``."""
        return _SELECT.format(
            table=self.table_sql,
            table_name=f"{self.schema}.emt_messages",
            default_partition=quote_literal(DEFAULT_PARTITION),
            tx=int(after.transaction_id),
            pos=int(after.global_position),
            bound=int(bound),
            limit=f" LIMIT {int(limit)}" if limit is not None else "",
        )

    def archive_streams(
        self,
        conn: psycopg.Connection[Any],
        streams: Mapping[str, StreamFingerprint],
        *,
        delete: bool = False,
        dry_run: bool = False,
    ) -> StoreArchive:
        """Set ``is_archived`` on every message of the verified streams (and their ``emt_streams`` rows)."""
        if delete:
            raise ArchiveNotSupportedError(
                "--delete is for the native store only: Emmett archives by its own is_archived flag."
            )
        fingerprint = event_fingerprint_sql("m.message_id", "m.global_position")
        rows = (
            f"SELECT m.stream_id, {fingerprint} AS fingerprint, NOT m.is_archived AS active "
            f"FROM {self.table_sql} AS m WHERE m.message_kind = 'E'"
        )
        streams_table = self.ref("emt_streams") if "is_archived" in self.columns("emt_streams") else None

        def apply(ids: list[str]) -> int:
            changed = conn.execute(
                f"UPDATE {self.table_sql} SET is_archived = true WHERE stream_id = ANY(%s) AND NOT is_archived "
                "AND message_kind = 'E'",
                (ids,),
            ).rowcount
            if streams_table is not None:
                conn.execute(f"UPDATE {streams_table} SET is_archived = true WHERE stream_id = ANY(%s)", (ids,))
            return changed

        return archive_verified(conn, streams, rows, apply, dry_run=dry_run)
