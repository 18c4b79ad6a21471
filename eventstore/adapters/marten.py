"""Marten (.NET): tables ``mt_events`` and ``mt_streams``, sequence ``mt_events_sequence``.

Mapping to the lake's columns:

=================  ===================================================================
lake column        Marten
=================  ===================================================================
global_position    ``seq_id``
transaction_id     0 on every row: ``mt_events`` has no transaction id, so checkpoints are
                   ``(0, seq_id)`` and their order is Marten's own ``seq_id`` order
stream_id          ``stream_id`` as text (uuid or string stream identity)
stream_type        ``mt_streams.type`` (the aggregate type name), ``''`` when Marten left it null
stream_version     ``version``
event_id           ``id``
event_type         ``type`` without a trailing ``_v<N>`` (Marten's alias of the .NET type)
event_version      N of a trailing ``_v<N>`` in ``type`` (how Marten users alias a new event
                   version, e.g. ``item_added_v2``), else 1
data               ``data``; null for a binary event (``bdata`` set): see bad rows below
metadata           ``headers`` (if the column exists) merged with ``correlation_id``,
                   ``causation_id``, ``user_name`` (optional columns) and ``dotnet_type``
                   (``mt_dotnet_type``)
recorded_at        ``timestamp``
is_archived        ``is_archived`` (archived events are read and flagged, never dropped)
tenant_id          ``tenant_id``, null for Marten's default tenant ``*DEFAULT*``
=================  ===================================================================

Bad rows: an event stored with Marten's binary serializer (``bdata`` not null, ``data`` the
``{}`` placeholder) comes through with ``data`` null and ``metadata.decode_error`` naming the
table, ``seq_id`` and what was found, so the ingest can dead-letter it.

Gap safety (``gap_safety = "sequence-high-water-mark"``). ``seq_id`` comes from
``mt_events_sequence`` at INSERT and the row appears at COMMIT, so ``seq_id > last`` alone
skips slow transactions. :meth:`MartenAdapter.head` computes a *safe position* ``H``: every
``seq_id <= H`` is either committed and visible or will never exist. It proves it three ways,
none of them a timer:

1. *Contiguity.* Starting from a position already proven (the caller's checkpoint or an
   earlier head), visible rows ``H+1, H+2, ...`` without a hole are committed, and ``seq_id``
   is the primary key, so nothing else can ever take those positions.
2. *Nobody in flight.* The head first reads the highest value the sequence has handed out
   (``L``), then, in a later statement, the transactions holding a write lock on the sequence
   or on ``mt_events`` (``nextval`` takes ``RowExclusiveLock`` on the sequence and keeps it to
   the end of the transaction, before it hands out a value). A transaction that drew a value
   ``<= L`` drew it before ``L`` was read, so at the later lock read it is either still listed
   or has ended; and a transaction's commit is visible before its locks are released. If no
   writer is listed, every hole ``<= L`` is a rolled-back transaction: ``H = L``.
3. *Drained candidates.* Otherwise ``(L, writers)`` is remembered; at a later head, once none
   of those writers (by virtual transaction id) holds a lock any more, ``H`` may move to that
   ``L``. So a steady stream of short transactions never stalls the reader, while a long-held
   transaction holds it back exactly at its own first position (Marten's daemon reasons the
   same way with its liveness probe, but then skips stale gaps on a timer; this never does).

Archiving (``projectionist archive --in-store``) sets Marten's own ``is_archived`` on the stream's
rows of ``mt_events`` and on its ``mt_streams`` row, as Marten's ``ArchiveStream`` does. ``seq_id``
does not change (with Marten's archived-stream partitioning the row moves to the archived
partition, keeping it), so the keyset read below never reads an archived event again, and the
reader keeps reading archived rows (flagged) rather than skipping them: an event archived before
the lake read it is still read once, never lost.

The bound is a position, so the per-batch SQL is the simple keyset ``seq_id > after AND
seq_id <= H`` (``bound_kind = "position"``): the ingest calls ``head(after)`` and passes
``head.bound`` as ``bound``. Requirements, checked when the adapter opens: one
store-wide ``mt_events_sequence`` (Marten's per-tenant sequences are refused), with
``INCREMENT 1`` and ``CACHE 1`` (Marten's default; a cached sequence hands out values below
``L`` later, which would break (2) and (3)).
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
)
from eventstore.adapters.highwater import SequenceHighWater
from eventstore.connection import connect_read_only
from eventstore.errors import ConfigurationError
from eventstore.positions import START, Checkpoint, Head
from eventstore.quoting import quote_literal

__all__ = ["DEFAULT_TENANT", "MartenAdapter"]

DEFAULT_TENANT = "*DEFAULT*"

_WANTED = {
    "seq_id": "bigint",
    "id": "uuid",
    "stream_id": "",
    "version": "bigint",
    "data": "jsonb",
    "type": "character varying",
    "timestamp": "timestamp with time zone",
    "tenant_id": "",
    "mt_dotnet_type": "",
}

_SELECT = """
SELECT e.seq_id AS global_position,
       0::bigint AS transaction_id,
       e.stream_id::text AS stream_id,
       coalesce(s.type, '') AS stream_type,
       e.version AS stream_version,
       e.id::text AS event_id,
       regexp_replace(e.type, '_v[0-9]{{1,9}}$', '') AS event_type,
       coalesce(substring(e.type FROM '_v([0-9]{{1,9}})$')::int, 1) AS event_version,
       CASE WHEN @binary@ OR jsonb_typeof(e.data) <> 'object' THEN NULL ELSE e.data::text END AS data,
       (CASE WHEN @binary@ THEN jsonb_build_object('decode_error',
            format('@table_name@ seq_id %s: binary event payload (bdata, %s bytes) of type %s; '
                   'only JSON-serialized Marten events can be read', e.seq_id, @bdata_len@, e.type))
        WHEN jsonb_typeof(e.data) <> 'object' THEN jsonb_build_object('decode_error',
            format('@table_name@ seq_id %s: data is a JSON %s, not an object', e.seq_id, jsonb_typeof(e.data)))
        ELSE @headers@
             || jsonb_strip_nulls(jsonb_build_object('correlation_id', @correlation@, 'causation_id', @causation@,
                                                     'user_name', @user_name@, 'dotnet_type', e.mt_dotnet_type))
        END)::text AS metadata,
       e.timestamp AS recorded_at,
       coalesce(e.is_archived, false) AS is_archived,
       NULLIF(e.tenant_id, @default_tenant@) AS tenant_id
FROM @events@ AS e
LEFT JOIN @streams@ AS s ON s.id = e.stream_id@tenant_join@
WHERE e.seq_id > {pos} AND e.seq_id <= {bound}
ORDER BY e.seq_id{limit}
"""


class MartenAdapter(SqlAdapter):
    """Reads Marten's ``mt_events`` up to a proven high-water mark of ``seq_id``."""

    kind = "marten"
    gap_safety = "sequence-high-water-mark"
    own_tenant = "its tenant_id column"
    bound_kind = "position"
    table = "mt_events"

    @classmethod
    def recognize(cls, table: CatalogTable) -> str | None:
        """``mt_events`` with Marten's ``seq_id`` and ``mt_dotnet_type`` columns."""
        found = table.name == "mt_events" and {"seq_id", "mt_dotnet_type"} <= table.columns.keys()
        return cls.kind if found else None

    def __init__(self, dsn: str, schema: str = "public") -> None:
        super().__init__(dsn, schema)
        cols = self.require_columns(
            "mt_events", _WANTED, "Marten keeps its events in mt_events (StoreOptions.Events.DatabaseSchemaName)."
        )
        streams = self.columns("mt_streams")
        if not streams:
            raise ConfigurationError(f"{schema}.mt_events exists but {schema}.mt_streams does not: is it Marten's?")
        self.events_sql = self.ref("mt_events")
        self.streams_sql = self.ref("mt_streams")
        self.sequence_sql = self.ref("mt_events_sequence")
        self._check_sequence()
        # Conjoined tenancy keys streams by (tenant_id, id).
        conjoined = self._stream_key_has_tenant()
        opt = cols.__contains__
        replacements = {
            "@tenant_join@": " AND s.tenant_id = e.tenant_id" if conjoined else "",
            "@events@": self.events_sql,
            "@streams@": self.streams_sql,
            "@table_name@": f"{schema}.mt_events",
            "@binary@": "e.bdata IS NOT NULL" if opt("bdata") else "false",
            "@bdata_len@": "octet_length(e.bdata)" if opt("bdata") else "0",
            "@headers@": "coalesce(CASE WHEN jsonb_typeof(e.headers) = 'object' THEN e.headers END, '{{}}'::jsonb)"
            if opt("headers")
            else "'{{}}'::jsonb",
            "@correlation@": "e.correlation_id::text" if opt("correlation_id") else "NULL::text",
            "@causation@": "e.causation_id::text" if opt("causation_id") else "NULL::text",
            "@user_name@": "e.user_name::text" if opt("user_name") else "NULL::text",
            "@default_tenant@": quote_literal(DEFAULT_TENANT),
        }
        select = _SELECT
        for token, value in replacements.items():
            select = select.replace(token, value)
        self._select = select
        self.has_archive_flag = opt("is_archived") and "is_archived" in streams
        if not opt("is_archived"):
            self._select = self._select.replace("coalesce(e.is_archived, false)", "false")
        self.high_water = SequenceHighWater(self.events_sql, "seq_id", self.sequence_sql)

    def _check_sequence(self) -> None:
        with connect_read_only(self.dsn) as conn:
            row = conn.execute(
                "SELECT increment_by, cache_size FROM pg_sequences WHERE schemaname = %s AND sequencename = %s",
                (self.schema, "mt_events_sequence"),
            ).fetchone()
            tenant_sequences = conn.execute(
                "SELECT count(*) FROM pg_sequences WHERE schemaname = %s "
                "AND sequencename LIKE 'mt\\_events\\_sequence\\_%%'",
                (self.schema,),
            ).fetchone()
        if row is None:
            raise ConfigurationError(
                f"{self.schema}.mt_events_sequence does not exist: Marten creates it with mt_events; "
                "is this a Marten event store (and the right PROJECTIONIST_EVENT_STORE_SCHEMA)?"
            )
        if tenant_sequences and tenant_sequences[0]:
            raise ConfigurationError(
                f"{self.schema} uses Marten's per-tenant event sequences (UseTenantPartitionedEvents): seq_id "
                "is not unique across tenants there, and this adapter reads one store-wide sequence only."
            )
        if int(row[0]) != 1 or int(row[1]) != 1:
            raise ConfigurationError(
                f"{self.schema}.mt_events_sequence has INCREMENT {row[0]} CACHE {row[1]}; the gap-safe reader "
                "needs Marten's default INCREMENT 1 CACHE 1 (a cached sequence hands out old values later): "
                f"ALTER SEQUENCE {self.schema}.mt_events_sequence INCREMENT 1 CACHE 1."
            )

    def _stream_key_has_tenant(self) -> bool:
        with connect_read_only(self.dsn) as conn:
            row = conn.execute(
                "SELECT bool_or(a.attname = 'tenant_id') FROM pg_index i "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                "WHERE i.indrelid = %s::regclass AND i.indisprimary",
                (self.streams_sql,),
            ).fetchone()
        return bool(row and row[0])

    def head(self, after: Checkpoint = START) -> Head:
        """The proven safe position (see the module docstring) and the last event at or below it."""
        return self.in_session(lambda conn: self._head(conn, after))

    def _head(self, conn: psycopg.Connection[Any], after: Checkpoint) -> Head:
        proven, in_flight = self.high_water.prove(conn, int(after.global_position))
        last = conn.execute(f"SELECT max(seq_id) FROM {self.events_sql} WHERE seq_id <= %s", (proven,)).fetchone()
        pending = conn.execute(
            f"SELECT EXISTS (SELECT 1 FROM {self.events_sql} WHERE seq_id > %s)", (proven,)
        ).fetchone()
        last_position = int(last[0]) if last and last[0] is not None else 0
        return Head(
            proven,
            Checkpoint(0, last_position) if last_position else START,
            bool(pending and pending[0]) or in_flight,
        )

    def query(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The PostgreSQL query for events after ``after`` up to the proven position ``bound``."""
        if after.transaction_id != 0:
            raise ConfigurationError(
                f"checkpoint {after} was not written by the marten adapter (its transaction id is always 0): "
                "was PROJECTIONIST_EVENT_STORE_KIND changed after an ingest?"
            )
        return self._select.format(
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
        """Set ``is_archived`` on the verified streams' ``mt_events`` rows and ``mt_streams`` row."""
        if delete:
            raise ArchiveNotSupportedError(
                "--delete is for the native store only: Marten archives by its own is_archived flag."
            )
        if not self.has_archive_flag:
            raise ArchiveNotSupportedError(
                f"archive --in-store is not supported for this marten store: {self.schema}.mt_events or mt_streams "
                "has no is_archived column (a Marten release before stream archiving?)."
            )
        fingerprint = event_fingerprint_sql("e.id", "e.seq_id")
        rows = (
            f"SELECT e.stream_id::text AS stream_id, {fingerprint} AS fingerprint, "
            f"NOT coalesce(e.is_archived, false) AS active FROM {self.events_sql} AS e"
        )

        def apply(ids: list[str]) -> int:
            changed = conn.execute(
                f"UPDATE {self.events_sql} SET is_archived = true "
                "WHERE stream_id::text = ANY(%s) AND NOT coalesce(is_archived, false)",
                (ids,),
            ).rowcount
            conn.execute(f"UPDATE {self.streams_sql} SET is_archived = true WHERE id::text = ANY(%s)", (ids,))
            return changed

        return archive_verified(conn, streams, rows, apply, dry_run=dry_run)
