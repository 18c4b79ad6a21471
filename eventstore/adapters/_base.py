"""What every adapter shares: the lake's columns, bad rows, and the DuckDB read loop."""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import duckdb
import psycopg
from psycopg import sql

from eventstore import positions
from eventstore.connection import connect_read_only, describe_dsn
from eventstore.duckdb_connections import new_connection
from eventstore.errors import ConfigurationError, UndecodableEventError
from eventstore.positions import START, Checkpoint, Head
from eventstore.quoting import quote_literal
from eventstore.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

T = TypeVar("T")

__all__ = [
    "ADAPTER_SCHEMA",
    "DEFAULT_TABLE",
    "UNBOUNDED",
    "ArchiveNotSupportedError",
    "BadRow",
    "CatalogTable",
    "EventStoreAdapter",
    "SqlAdapter",
    "StoreArchive",
    "StoreConnection",
    "StoreMismatchError",
    "StreamFingerprint",
    "adapter_schema",
    "archive_verified",
    "attached_store",
    "bad_rows",
    "catalog_tables",
    "event_fingerprint_sql",
    "quote_literal",
    "raise_for_bad_rows",
    "snapshot_head",
]

#: The lake's raw event columns (``EVENT_SCHEMA``) plus the two every adapter fills:
#: ``is_archived`` (false where the store has no archive) and ``tenant_id`` (null for the
#: store's default tenant or a store without tenants). Built on first use (:func:`__getattr__`), like
#: ``EVENT_SCHEMA``: an ingest runs in DuckDB and hands nothing over as Arrow, so it does not load pyarrow.
ADAPTER_SCHEMA: pa.Schema


def __getattr__(name: str) -> Any:
    """``ADAPTER_SCHEMA``, built (and kept) on first use."""
    if name != "ADAPTER_SCHEMA":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return adapter_schema()


@functools.cache
def adapter_schema() -> pa.Schema:
    """:data:`ADAPTER_SCHEMA` (importing pyarrow the first time)."""
    import pyarrow as pa

    return positions.EVENT_SCHEMA.append(pa.field("is_archived", pa.bool_())).append(pa.field("tenant_id", pa.string()))


#: A row whose payload cannot be decoded (compressed, encrypted, binary) has ``data`` null and
#: ``metadata`` = ``{"decode_error": "<what was found>"}``: it stays in its place in checkpoint
#: order, so the ingest can dead-letter it instead of stopping the whole read.
DECODE_ERROR_KEY = "decode_error"


class EventStoreAdapter(Protocol):
    """A gap-safe reader of one kind of event store, yielding ``ADAPTER_SCHEMA`` batches.

    ``head(after)`` returns the safe head; its ``bound`` is the adapter's *bound*
    (a transaction id where ``bound_kind == "transaction_id"``, a position where it is
    ``"position"``) to pass to ``query``/``duckdb_relation_sql``. ``after`` is the checkpoint the
    caller resumes from: an adapter whose proof builds on settled positions may start there.
    """

    kind: str
    gap_safety: str
    bound_kind: str
    dsn: str
    schema: str
    table: str  # the events table: ``raw.events.source`` is ``<kind>:<schema>.<table>``

    def head(self, after: Checkpoint = START) -> Head: ...

    def pending(self, after: Checkpoint) -> tuple[int, datetime | None]:
        """Events after ``after`` (settled or not) and the oldest one's ``recorded_at``: the lake's lag."""
        ...

    def read(
        self, after: Checkpoint = START, *, batch_size: int = 100_000, until: Head | None = None
    ) -> Iterator[pa.RecordBatch]: ...

    def query(self, after: Checkpoint, bound: int, limit: int | None = None) -> str: ...

    def duckdb_relation_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str: ...

    def ingest_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The rows of ``duckdb_relation_sql`` in any order (the ingest does not need DuckDB to sort them)."""
        ...

    def duckdb(self) -> duckdb.DuckDBPyConnection: ...

    def archive_streams(
        self,
        conn: psycopg.Connection[Any],
        streams: Mapping[str, StreamFingerprint],
        *,
        delete: bool = False,
        dry_run: bool = False,
    ) -> StoreArchive:
        """Archive ``streams`` in the store with the kind's own mechanism, in ``conn``'s open transaction.

        Only streams whose events in the store match their fingerprint (taken from the lake's cold tier)
        change; ``conn`` is committed by the caller. ``dry_run`` checks and counts, changing nothing.
        Kinds that cannot archive raise :class:`ArchiveNotSupportedError` saying why.
        """
        ...

    def close(self) -> None: ...


#: ``PROJECTIONIST_EVENT_STORE_TABLE``'s default (the native table's name); for kinds whose table has
#: another name it means "not set".
DEFAULT_TABLE = "events"

#: A bound above every transaction id and position: ``pending`` counts settled and in-flight events.
UNBOUNDED = 2**62


class StoreMismatchError(ConfigurationError):
    """Raised by an adapter whose tables are not in the database as its kind expects.

    :func:`eventstore.adapters.open_reader` adds which event tables the database does hold.
    """


@dataclass(frozen=True)
class CatalogTable:
    """A table of the database, with its columns (name → type), as detection sees it."""

    schema: str
    name: str
    columns: dict[str, str]


_CATALOG = """
SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY a.attnum), array_agg(format_type(a.atttypid, NULL)
    ORDER BY a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
  AND (%s::text IS NULL OR n.nspname = %s::text)
GROUP BY n.nspname, c.relname
ORDER BY n.nspname, c.relname
"""


def catalog_tables(dsn: str, schema: str | None = None) -> list[CatalogTable]:
    """Every table of the database (optionally one schema) with its columns, in one catalog query."""
    with connect_read_only(dsn) as conn:
        rows = conn.execute(_CATALOG, (schema, schema)).fetchall()
    return [CatalogTable(str(nsp), str(name), dict(zip(cols, types, strict=True))) for nsp, name, cols, types in rows]


def attached_store(dsn: str) -> duckdb.DuckDBPyConnection:
    """A new DuckDB connection (UTC) with the store at ``dsn`` attached read-only as ``store``."""
    con = new_connection("postgres")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"ATTACH {quote_literal(dsn)} AS store (TYPE postgres, READ_ONLY)")
    return con


def snapshot_head(conn: psycopg.Connection[Any], table_sql: str, events: str = "true") -> Head:
    """The safe head of a table ordered by ``(transaction_id xid8, global_position)``, for the kinds read by
    transaction snapshot (native, Emmett; the argument is in :mod:`eventstore.adapters.native`).

    The bound is the snapshot's xmin; ``last`` the last event below it; ``events_pending`` whether events
    wait at or above it. ``events`` is a condition on the rows (alias ``e``) that are events. One statement,
    so one snapshot and one round trip on ``conn`` (a read-only session, autocommit).
    """
    row = conn.execute(
        # Qualified names: an unqualified ORDER BY would sort by the text output column.
        f"SELECT b.x::text, l.transaction_id::text, l.global_position, EXISTS (SELECT 1 FROM {table_sql} AS e "
        f"WHERE ({events}) AND e.transaction_id >= b.x) "
        "FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x) AS b LEFT JOIN LATERAL ("
        f"SELECT e.transaction_id, e.global_position FROM {table_sql} AS e WHERE ({events}) AND e.transaction_id < b.x "
        "ORDER BY e.transaction_id DESC, e.global_position DESC LIMIT 1) AS l ON true"
    ).fetchone()
    assert row is not None
    last = Checkpoint(int(row[1]), int(row[2])) if row[1] is not None else START
    return Head(int(row[0]), last, bool(row[3]))


class StoreConnection:
    """A reader's store at ``dsn``, with one DuckDB connection attaching it on first use; closes with ``with``."""

    def __init__(self, dsn: str, schema: str = "public") -> None:
        self.dsn = dsn
        self.schema = schema
        self._duck: duckdb.DuckDBPyConnection | None = None
        self._session: psycopg.Connection[Any] | None = None

    def in_session(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work(conn)`` on a read-only store session kept from one call to the next, until :meth:`close`.

        ``follow`` reads the safe head every cycle: a new connection for each read cost a backend start
        (the head took 27 ms a cycle under 5,000 appends/s, measured). A kept session the server closed while
        it was idle (a restart, ``idle_session_timeout``) is replaced and ``work`` runs once more on the new
        one; any other failure drops the session and propagates. ``work`` only reads.
        """
        kept = self._session is not None and not self._session.closed
        if self._session is None or self._session.closed:
            self._session = connect_read_only(self.dsn)
        try:
            return work(self._session)
        except psycopg.OperationalError:
            self._drop_session()
            if not kept:
                raise
        except BaseException:
            self._drop_session()
            raise
        self._session = connect_read_only(self.dsn)  # the server is down: this fails, and that is the error
        try:
            return work(self._session)
        except BaseException:
            self._drop_session()
            raise

    def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(psycopg.Error):
                session.close()

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with this store attached read-only as ``store``."""
        if self._duck is None:
            self._duck = attached_store(self.dsn)
        return self._duck

    def close(self) -> None:
        """Release the DuckDB connection (and its PostgreSQL connections) and the kept session."""
        if self._duck is not None:
            self._duck.close()
            self._duck = None
        self._drop_session()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqlAdapter(StoreConnection):
    """Base of the foreign-store adapters: the read loop, table checks, detection and settings hooks."""

    kind = ""
    gap_safety = ""
    bound_kind = "transaction_id"
    table: str  # set by each kind (a fixed name, or the configured table)
    #: Where the store keeps tenants of its own (then PROJECTIONIST_TENANT_FIELD is refused); None: it has none.
    own_tenant: str | None = None
    #: Whether PROJECTIONIST_TENANT_FIELD may name a column of the events table (only the native table's are free).
    tenant_columns = False

    @classmethod
    def recognize(cls, table: CatalogTable) -> str | None:  # pragma: no cover - abstract
        """The kind (or a description such as an old release of it) if ``table`` is this kind's events table."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, settings: Settings, dsn: str) -> SqlAdapter:
        """The adapter for the configured schema (and table, where the kind has a choice)."""
        return cls(dsn, settings.store_schema)

    def pending(self, after: Checkpoint) -> tuple[int, datetime | None]:
        """Events after ``after`` (settled or not) and the oldest one's ``recorded_at``, counted in PostgreSQL."""
        with connect_read_only(self.dsn) as conn:
            row = conn.execute(
                f"SELECT count(*), min(q.recorded_at) FROM ({self.query(after, UNBOUNDED)}) AS q"
            ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    # -- subclasses -------------------------------------------------------------------------
    def head(self, after: Checkpoint = START) -> Head:  # pragma: no cover - abstract
        raise NotImplementedError

    def query(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:  # pragma: no cover
        raise NotImplementedError

    def duckdb_relation_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """DuckDB SQL over the attached store (alias ``store``) returning ``ADAPTER_SCHEMA`` rows.

        An adapter may add ``correlation_id`` and ``causation_id`` after them, when it has them
        at hand: the ingest then takes them as they are instead of parsing ``metadata`` again.
        """
        return f"SELECT * FROM postgres_query('store', {quote_literal(self.query(after, bound, limit))})"

    def ingest_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The rows of :meth:`duckdb_relation_sql` in any order: for the ingest, which writes a
        batch as a set and reads its end back from the rows, so DuckDB need not sort them."""
        return self.duckdb_relation_sql(after, bound, limit)

    #: Why this kind cannot archive in the store, for kinds that keep the default :meth:`archive_streams`.
    archive_unsupported = "Projectionist knows no archiving mechanism of this store"

    def archive_streams(
        self,
        conn: psycopg.Connection[Any],
        streams: Mapping[str, StreamFingerprint],
        *,
        delete: bool = False,
        dry_run: bool = False,
    ) -> StoreArchive:
        """Refuse: this kind has no archiving Projectionist can use (its events stay queryable in the lake)."""
        raise ArchiveNotSupportedError(
            f"archive --in-store is not supported for {self.kind} stores: {self.archive_unsupported}. "
            "Its finished streams stay archived in the lake only (`projectionist archive` without --in-store)."
        )

    # -- shared -----------------------------------------------------------------------------
    def ref(self, table: str) -> str:
        """``schema.table`` quoted for PostgreSQL."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table)).as_string(None)

    def read(
        self, after: Checkpoint = START, *, batch_size: int = 100_000, until: Head | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Yield settled events after ``after`` up to the safe head (taken now unless ``until``)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        bound = (until or self.head(after)).bound
        schema = adapter_schema()
        rel = self.duckdb().sql(self.duckdb_relation_sql(after, bound)).select(*schema.names)
        for batch in rel.to_arrow_reader(batch_size):
            if batch.num_rows:
                yield batch.cast(schema)

    def columns(self, table: str) -> dict[str, str]:
        """Column name → type of ``schema.table`` (empty if it does not exist)."""
        with connect_read_only(self.dsn) as conn:
            rows = conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
                (self.schema, table),
            ).fetchall()
        return {str(name): str(kind) for name, kind in rows}

    def require_columns(self, table: str, wanted: dict[str, str], hint: str) -> dict[str, str]:
        """Check that ``table`` has the ``wanted`` columns (name → type); return all its columns."""
        found = self.columns(table)
        if not found:
            raise StoreMismatchError(
                f"PROJECTIONIST_EVENT_STORE_KIND={self.kind} expects table {self.schema}.{table} in "
                f"{describe_dsn(self.dsn)}, but it does not exist. {hint}".rstrip()
            )
        wrong = {
            name: found.get(name, "missing")
            for name, kind in wanted.items()
            if not found.get(name, "missing").startswith(kind)
        }
        if wrong:
            listed = ", ".join(f"{name} ({wanted[name]} expected, {got} found)" for name, got in wrong.items())
            raise StoreMismatchError(
                f"table {self.schema}.{table} is not a {self.kind} event table: {listed}. "
                f"Check PROJECTIONIST_EVENT_STORE_KIND and PROJECTIONIST_EVENT_STORE_SCHEMA. {hint}"
            )
        return found


@dataclass(frozen=True)
class BadRow:
    """An event the adapter read but could not decode; the ingest dead-letters it."""

    global_position: int
    event_id: str
    stream_id: str
    reason: str


def bad_rows(batch: pa.RecordBatch) -> list[BadRow]:
    """The rows of ``batch`` whose payload could not be decoded (``data`` is null)."""

    data = batch.column("data")
    if data.null_count == 0:
        return []
    found: list[BadRow] = []
    for index in range(batch.num_rows):
        if data[index].is_valid:
            continue
        metadata = batch.column("metadata")[index].as_py() or "{}"
        reason = str(json.loads(metadata).get(DECODE_ERROR_KEY, "payload missing"))
        found.append(
            BadRow(
                int(batch.column("global_position")[index].as_py()),
                str(batch.column("event_id")[index].as_py()),
                str(batch.column("stream_id")[index].as_py()),
                reason,
            )
        )
    return found


def raise_for_bad_rows(batches: Sequence[pa.RecordBatch] | pa.RecordBatch) -> None:
    """Raise UndecodableEventError for the first undecodable row (for callers without a dead letter)."""
    import pyarrow as pa

    for batch in [batches] if isinstance(batches, pa.RecordBatch) else batches:
        for row in bad_rows(batch):
            raise UndecodableEventError(row.reason)


# -- archiving in the store (``projectionist archive --in-store``) ------------------------------


class ArchiveNotSupportedError(ConfigurationError):
    """Raised when a store kind (or this store's schema) has no archiving Projectionist can use."""


@dataclass(frozen=True)
class StreamFingerprint:
    """What the lake's cold tier holds of one stream: its events and :func:`event_fingerprint_sql` summed."""

    events: int
    checksum: int


@dataclass(frozen=True)
class StoreArchive:
    """What archiving in the store did: streams done (now or before), events changed now, streams skipped."""

    archived: tuple[str, ...]
    events: int
    skipped: dict[str, str]


def event_fingerprint_sql(event_id: str, position: str) -> str:
    """PostgreSQL: 60 bits of md5(``event_id@position``) as bigint. DuckDB computes the same over the lake
    (:mod:`warehouse.archive`), so a stream's sum compares across the two systems."""
    return f"('x' || substr(md5(({event_id})::text || '@' || ({position})::text), 1, 15))::bit(60)::bigint"


def archive_verified(
    conn: psycopg.Connection[Any],
    streams: Mapping[str, StreamFingerprint],
    rows_sql: str,
    apply: Callable[[list[str]], int],
    *,
    gone_is_done: bool = False,
    dry_run: bool = False,
) -> StoreArchive:
    """Archive the streams whose rows in the store match their fingerprint; skip the others with a reason.

    ``rows_sql`` yields ``stream_id text, fingerprint bigint, active bool`` for every event of the store,
    archived or not; ``apply`` archives the active rows of the given streams and returns how many it
    changed. Run in one REPEATABLE READ transaction, the check and ``apply`` see the same rows: an event
    committed meanwhile is neither checked nor archived, and a later ingest reads it. ``gone_is_done``:
    a stream with no row left counts as archived (a store that deletes). ``dry_run`` counts the rows
    ``apply`` would change and does not call it.
    """
    ids = sorted(streams)
    found: dict[str, tuple[int, int, int]] = {}
    if ids:
        rows = conn.execute(
            f"SELECT r.stream_id, count(*), coalesce(sum(r.fingerprint), 0)::text, count(*) FILTER (WHERE r.active) "
            f"FROM ({rows_sql}) AS r WHERE r.stream_id = ANY(%s) GROUP BY r.stream_id",
            (ids,),
        ).fetchall()
        found = {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}
    done: list[str] = []
    to_change: list[str] = []
    would_change = 0
    skipped: dict[str, str] = {}
    for stream_id in ids:
        expected = streams[stream_id]
        events, checksum, active = found.get(stream_id, (0, 0, 0))
        if events == 0 and gone_is_done:
            done.append(stream_id)
        elif (events, checksum) != (expected.events, expected.checksum):
            skipped[stream_id] = (
                f"the store holds {events} event(s) of it, the lake's archive {expected.events}"
                + ("" if events != expected.events else " with other ids")
                + ": it changed after archiving in the lake; run `projectionist ingest` and `projectionist archive`"
            )
        else:
            done.append(stream_id)
            if active:
                to_change.append(stream_id)
                would_change += active
    if dry_run:
        return StoreArchive(tuple(done), would_change, skipped)
    changed = apply(to_change) if to_change else 0
    return StoreArchive(tuple(done), changed, skipped)
