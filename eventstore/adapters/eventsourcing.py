"""The Python ``eventsourcing`` library (PyPI ``eventsourcing[postgres]``): table ``<app>_events``.

One table per application, named after the application class (``Shop`` → ``shop_events``),
with ``originator_id uuid, originator_version, topic text, state bytea, notification_id``.

Mapping to the lake's columns:

=================  ===================================================================
lake column        eventsourcing
=================  ===================================================================
global_position    ``notification_id``
transaction_id     0 on every row (the table has none): checkpoints are
                   ``(0, notification_id)``, whose order is the library's notification order
stream_id          ``originator_id`` as text
stream_type        the aggregate class: the part of the topic's qualified name before the
                   event class (``shop:Cart.ItemAdded`` → ``Cart``)
stream_version     ``originator_version``
event_id           ``uuid5(EVENT_ID_NAMESPACE, "<originator_id>:<originator_version>")``: the
                   library stores no event id, this one is deterministic and unique
event_type         the topic's last dotted part (``ItemAdded``)
event_version      the state's ``class_version`` (the library's upcasting marker), else 1
data               the state's JSON object without the library's ``timestamp``,
                   ``class_version``, ``originator_topic`` and the ``correlation_id``/
                   ``causation_id`` attributes (which go to metadata); values of custom types
                   stay as the library's transcoder wrote them (``{"_type_": …, "_data_": …}``)
metadata           ``{"topic": …}`` plus ``originator_topic``, ``correlation_id`` and
                   ``causation_id`` when the state has them
recorded_at        the state's ``timestamp`` (``{"_type_": "datetime_iso", "_data_": …}``)
is_archived        false (the library has no archive)
tenant_id          null, or the field PROJECTIONIST_TENANT_FIELD names (``data.<attr>``)
=================  ===================================================================

Bad rows: an application may compress (``COMPRESSOR_TOPIC``) or encrypt (``CIPHER_TOPIC``)
``state``; then it is not UTF-8 JSON. Such an event is not a crash: it comes through with
``data`` null and ``metadata.decode_error`` naming the table, the notification id and what was
found (zlib header, not UTF-8, not a JSON object), for the ingest to dead-letter. Decoding
happens in DuckDB (``duckdb_relation_sql``), so :meth:`EventsourcingAdapter.query` returns the
raw columns (``state`` as bytea) and only the DuckDB SQL returns the lake's columns.

Gap safety (``gap_safety = "table-lock"``). The library's recorder takes ``LOCK TABLE <table>
IN EXCLUSIVE MODE`` in the inserting transaction before the INSERT draws ``notification_id``
from the table's sequence, and keeps it until COMMIT (``PostgresApplicationRecorder._lock_table``
in ``eventsourcing/postgres.py``: "we want the insert order to be the same as the commit
order"). So while a writer holds the lock, every smaller id is already settled and every id it
draws is larger than every committed one: ``H = max(notification_id)`` visible now is safe, and
a hole below ``H`` is a rolled-back transaction. The adapter does not take that on trust: in
the same head it first reads ``max``, then looks for transactions holding a write lock on the
table without the EXCLUSIVE lock (the library's ``POSTGRES_ENABLE_DB_FUNCTIONS`` insert function
or another writer that skips the lock). If there is one, it falls back to the proven
high-water mark of :mod:`eventstore.adapters.highwater` (the Marten strategy) for that head.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg

from eventstore.adapters._base import (
    DEFAULT_TABLE,
    UNBOUNDED,
    CatalogTable,
    SqlAdapter,
    StoreMismatchError,
    catalog_tables,
)
from eventstore.adapters.highwater import WRITE_LOCK_MODES, SequenceHighWater
from eventstore.connection import connect_read_only
from eventstore.errors import ConfigurationError
from eventstore.positions import START, Checkpoint, Head
from eventstore.quoting import quote_literal
from eventstore.settings import Settings

__all__ = ["EVENT_ID_NAMESPACE", "EventsourcingAdapter", "event_id_of"]

#: Namespace of the derived event ids: ``uuid5(EVENT_ID_NAMESPACE, f"{originator_id}:{version}")``.
EVENT_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "projectionist:eventsourcing:event-id")


def event_id_of(originator_id: uuid.UUID | str, originator_version: int) -> uuid.UUID:
    """The event id the adapter derives for an event of the ``eventsourcing`` library."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{uuid.UUID(str(originator_id))}:{int(originator_version)}")


_WANTED = {
    "originator_id": "",
    "originator_version": "",
    "topic": "text",
    "state": "bytea",
    "notification_id": "bigint",
}

_SELECT = (
    "SELECT e.notification_id, e.originator_id::text AS originator_id, e.originator_version::bigint "
    "AS originator_version, e.topic, e.state FROM {table} AS e "
    "WHERE e.notification_id > {pos} AND e.notification_id <= {bound} ORDER BY e.notification_id{limit}"
)

# DuckDB: decode state (TRY: invalid UTF-8 gives NULL instead of failing the read), derive ids.
# - The raw rows are MATERIALIZED first: postgres_query is one stream, and everything computed
#   in its pipeline would run on one thread; after the break the decoding runs on all of them.
# - DuckDB's JSON values are text, so every JSON function parses its argument again: the state
#   is parsed once to check it is an object, once for every field read out of it (one
#   json_extract_string with a list of paths) and once by json_merge_patch; metadata is
#   assembled as text. data/metadata come out typed JSON, and correlation_id/causation_id as
#   columns of their own, so the ingest parses neither again.
# - Topics are split with split_part (same results as the regular expressions, faster).
_DUCK = """
WITH raw AS MATERIALIZED (SELECT * FROM postgres_query('store', {pg_query})),
decoded AS (SELECT *, TRY(decode(state)) AS text_state FROM raw),
parsed AS (
    SELECT *,
           CASE WHEN TRY(json_type(text_state)) = 'OBJECT' THEN text_state END AS j,
           sha1(unhex('{namespace}') || encode(originator_id || ':' || originator_version::VARCHAR)) AS h,
           split_part(topic, ':', -1) AS qualname
    FROM decoded),
fields AS (
    SELECT *, json_extract_string(j, ['$.class_version', '$.originator_topic', '$.correlation_id',
                                      '$.causation_id', '$.timestamp._data_']) AS f
    FROM parsed)
SELECT notification_id::BIGINT AS global_position,
       0::BIGINT AS transaction_id,
       originator_id AS stream_id,
       split_part(qualname, '.', -2) AS stream_type,
       originator_version::BIGINT AS stream_version,
       substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-5' || substr(h, 14, 3) || '-'
           || substr('89ab89ab89ab89ab', strpos('0123456789abcdef', substr(h, 17, 1)), 1)
           || substr(h, 18, 3) || '-' || substr(h, 21, 12) AS event_id,
       split_part(qualname, '.', -1) AS event_type,
       coalesce(TRY_CAST(f[1] AS INTEGER), 1) AS event_version,
       CASE WHEN j IS NOT NULL THEN json_merge_patch(j, '{{"timestamp": null, "class_version": null,
           "originator_topic": null, "correlation_id": null, "causation_id": null}}') END AS data,
       CASE WHEN j IS NOT NULL THEN ('{{"topic":' || to_json(topic)
               || coalesce(',"originator_topic":' || to_json(f[2]), '')
               || coalesce(',"correlation_id":' || to_json(f[3]), '')
               || coalesce(',"causation_id":' || to_json(f[4]), '') || '}}')::JSON
            ELSE json_object('decode_error', {table_name} || ' notification_id ' || notification_id::VARCHAR
               || ' (' || topic || '): state is ' ||
               CASE WHEN hex(state) SIMILAR TO '78(01|5E|9C|DA).*' THEN
                        'zlib-compressed data: the application sets COMPRESSOR_TOPIC; read it with an '
                        || 'application that decompresses, or ingest without compression'
                    WHEN text_state IS NULL THEN
                        'not UTF-8 text (' || octet_length(state)::VARCHAR || ' bytes): encrypted '
                        || '(CIPHER_TOPIC) or written by another transcoder'
                    ELSE 'UTF-8 text but not a JSON object' END)
       END AS metadata,
       TRY_CAST(f[5] AS TIMESTAMPTZ) AS recorded_at,
       false AS is_archived,
       NULL::VARCHAR AS tenant_id,
       f[3] AS correlation_id,
       f[4] AS causation_id
FROM fields
"""


class EventsourcingAdapter(SqlAdapter):
    """Reads an ``eventsourcing`` application's events table in notification order."""

    kind = "eventsourcing"
    gap_safety = "table-lock"
    bound_kind = "position"
    archive_unsupported = (
        "the eventsourcing library has no archived flag, and an aggregate's events are its only state: "
        "the library's repository rebuilds an aggregate from them (snapshots are optional), and its "
        "process applications follow notification ids, so moving or deleting rows would break the "
        "application itself"
    )

    @classmethod
    def recognize(cls, table: CatalogTable) -> str | None:
        """An application table: ``notification_id``, ``originator_id`` and a ``bytea`` ``state``."""
        columns = table.columns
        found = {"notification_id", "originator_id"} <= columns.keys() and columns.get("state") == "bytea"
        return cls.kind if found else None

    @classmethod
    def from_settings(cls, settings: Settings, dsn: str) -> EventsourcingAdapter:
        """The configured table; found in the schema when PROJECTIONIST_EVENT_STORE_TABLE is left at its default."""
        table = None if settings.store_table == DEFAULT_TABLE else settings.store_table
        return cls(dsn, settings.store_schema, table)

    def __init__(self, dsn: str, schema: str = "public", table: str | None = None) -> None:
        super().__init__(dsn, schema)
        self.table = table or self._detect_table()
        self.require_columns(
            self.table,
            _WANTED,
            "The eventsourcing library names the table after the application class (Shop → shop_events): "
            "set PROJECTIONIST_EVENT_STORE_TABLE.",
        )
        self.table_sql = self.ref(self.table)
        with connect_read_only(self.dsn) as conn:
            row = conn.execute("SELECT pg_get_serial_sequence(%s, 'notification_id')", (self.table_sql,)).fetchone()
        if not row or not row[0]:
            raise ConfigurationError(
                f"{schema}.{self.table}.notification_id is not fed by a sequence (bigserial): is it an "
                "eventsourcing application table (not an aggregate-only recorder's)?"
            )
        self.high_water = SequenceHighWater(self.table_sql, "notification_id", str(row[0]))
        #: How many heads had to fall back from the table lock to the high-water mark.
        self.fallbacks = 0

    def _detect_table(self) -> str:
        tables = [t.name for t in catalog_tables(self.dsn, self.schema) if self.recognize(t)]
        if len(tables) == 1:
            return tables[0]
        if not tables:
            raise StoreMismatchError(
                f"PROJECTIONIST_EVENT_STORE_KIND=eventsourcing expects an application events table "
                f"(originator_id, originator_version, topic, state, notification_id) in schema {self.schema}, "
                "and there is none."
            )
        raise ConfigurationError(
            f"schema {self.schema} holds several eventsourcing application tables ({', '.join(tables)}): "
            "set PROJECTIONIST_EVENT_STORE_TABLE to the one to read."
        )

    def _unlocked_writers(self, conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks w WHERE w.locktype = 'relation' AND w.granted "
            "AND w.relation = %s::regclass AND w.mode = ANY(%s) AND w.pid IS DISTINCT FROM pg_backend_pid() "
            "AND NOT EXISTS (SELECT 1 FROM pg_locks x WHERE x.locktype = 'relation' AND x.granted "
            "  AND x.relation = w.relation AND x.virtualtransaction = w.virtualtransaction "
            "  AND x.mode IN ('ExclusiveLock', 'AccessExclusiveLock')))",
            (self.table_sql, list(WRITE_LOCK_MODES)),
        ).fetchone()
        return bool(row and row[0])

    def head(self, after: Checkpoint = START) -> Head:
        """The safe position: the highest visible notification id while every writer holds the table lock."""
        return self.in_session(lambda conn: self._head(conn, after))

    def _head(self, conn: psycopg.Connection[Any], after: Checkpoint) -> Head:
        top = conn.execute(f"SELECT max(notification_id) FROM {self.table_sql}").fetchone()
        highest = int(top[0]) if top and top[0] is not None else 0
        if self._unlocked_writers(conn):  # read after max: see the module docstring
            self.fallbacks += 1
            bound, _ = self.high_water.prove(conn, int(after.global_position))
        else:
            bound = max(highest, int(after.global_position))
            self.high_water.proven = max(self.high_water.proven, bound)
        last = conn.execute(
            f"SELECT max(notification_id) FROM {self.table_sql} WHERE notification_id <= %s", (bound,)
        ).fetchone()
        waiting = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'relation' AND relation = %s::regclass "
            "AND mode = ANY(%s) AND pid IS DISTINCT FROM pg_backend_pid())",
            (self.table_sql, list(WRITE_LOCK_MODES)),
        ).fetchone()
        last_position = int(last[0]) if last and last[0] is not None else 0
        return Head(
            bound,
            Checkpoint(0, last_position) if last_position else START,
            highest > bound or bool(waiting and waiting[0]),
        )

    def pending(self, after: Checkpoint) -> tuple[int, datetime | None]:
        """Events after ``after``: counted only (decoding, hence ``recorded_at``, is left to DuckDB)."""
        with connect_read_only(self.dsn) as conn:
            row = conn.execute(f"SELECT count(*) FROM ({self.query(after, UNBOUNDED)}) AS q").fetchone()
        return (int(row[0]) if row else 0), None

    def query(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The PostgreSQL query for the raw rows (``state`` undecoded) after ``after`` up to ``bound``."""
        if after.transaction_id != 0:
            raise ConfigurationError(
                f"checkpoint {after} was not written by the eventsourcing adapter (its transaction id is always "
                "0): was PROJECTIONIST_EVENT_STORE_KIND changed after an ingest?"
            )
        return _SELECT.format(
            table=self.table_sql,
            pos=int(after.global_position),
            bound=int(bound),
            limit=f" LIMIT {int(limit)}" if limit is not None else "",
        )

    def duckdb_relation_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """DuckDB SQL returning ``ADAPTER_SCHEMA`` rows: decodes ``state``, derives ids and types."""
        return f"{self.ingest_sql(after, bound, limit)}\nORDER BY notification_id"

    def ingest_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """:meth:`duckdb_relation_sql` without its final sort, which the decoding in parallel needs."""
        return _DUCK.format(
            pg_query=quote_literal(self.query(after, bound, limit)),
            namespace=EVENT_ID_NAMESPACE.hex,
            table_name=quote_literal(f"{self.schema}.{self.table}"),
        ).strip()
