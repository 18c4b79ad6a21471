"""The native store: the gap-safe :class:`NativeReader` and its adapter, :class:`NativeAdapter`.

A ``global_position`` is taken at INSERT, but the row becomes visible at COMMIT, so reading
"position > last seen" skips the events of a slow transaction that commits later. This
reader reads only events whose writer's ``transaction_id`` is below
``pg_snapshot_xmin(pg_current_snapshot())`` — the oldest transaction still in progress — in
``(transaction_id, global_position)`` order, and checkpoints that pair.

Why that bound is sound: every transaction with an id below xmin has ended, so its events
are either all committed and visible to every later snapshot or rolled back and gone; no
transaction can later get an id below xmin. The bound is a *value*, fixed when a read
starts, so every later query (from any backend, any snapshot) sees exactly the same rows
below it: a read is repeatable and can be split across connections without an exported
snapshot. A rolled-back transaction leaves nothing behind and never holds the bound back.

Rows travel PostgreSQL → Arrow through DuckDB's postgres extension (binary COPY, no Python
per row). One backend cannot go faster than it turns jsonb into text, so a large read is cut
into slices of consecutive ``(transaction_id, global_position)`` ranges (boundaries found by
walking the index), read by a few backends at once and yielded strictly in order, holding at
most a few slices in memory (benchmarks/read_throughput.py measures both against raw paths).

:class:`NativeAdapter` is what the registry opens: the reader's batches with the two adapter columns
(the native table has no archive and no tenant, so ``is_archived`` is false and ``tenant_id`` null on
every row, unless ``PROJECTIONIST_TENANT_FIELD`` names a column: then the ingest query reads it as
``tenant_id``; a metadata or payload field is mapped by the ingest), detection of the native table, and its lag.

Archiving in the store (``projectionist archive --in-store``) moves a verified stream's rows from
``<table>`` to ``<table>_archive`` (same columns, created on first use), or deletes them with
``--delete``. Rows leave the read table with their ``(transaction_id, global_position)``; nothing
new appears in it, so the reader's bound and keyset are unaffected and a later ingest neither
re-reads nor misses an event.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb
import psycopg

from eventstore import positions
from eventstore.adapters._base import (
    DEFAULT_TABLE,
    CatalogTable,
    StoreArchive,
    StoreConnection,
    StoreMismatchError,
    StreamFingerprint,
    adapter_schema,
    archive_verified,
    catalog_tables,
    event_fingerprint_sql,
    snapshot_head,
)
from eventstore.connection import connect_read_only, describe_dsn
from eventstore.errors import TerminalError
from eventstore.native_store import table_ref
from eventstore.positions import START, Checkpoint, Head, checkpoint_of, in_range
from eventstore.quoting import quote_identifier, quote_literal
from eventstore.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["PARALLEL_SCAN_SHARE", "NativeAdapter", "NativeReader", "ParallelBatch", "with_adapter_columns"]


_SELECT = (
    "SELECT global_position, transaction_id::text::bigint AS transaction_id, stream_id, stream_type, "
    "stream_version, event_id::text AS event_id, event_type, event_version, data::text AS data, "
    "metadata::text AS metadata{ids}, recorded_at{tenant} FROM {table} AS e "
    "WHERE (e.transaction_id, e.global_position) > ('{tx}'::xid8, {pos}) AND e.transaction_id < '{bound}'::xid8 "
    "ORDER BY e.transaction_id, e.global_position{limit}"
)
_IDS = ", metadata ->> 'correlation_id' AS correlation_id, metadata ->> 'causation_id' AS causation_id"
# The checkpoint `offset` events after `after` (below `bound`), found on the index alone.
_BOUNDARY = (
    "SELECT e.transaction_id::text, e.global_position FROM {table} AS e "
    "WHERE (e.transaction_id, e.global_position) > (%s::xid8, %s) AND e.transaction_id < %s::xid8 "
    "ORDER BY e.transaction_id, e.global_position OFFSET %s LIMIT 1"
)
#: An ingest batch covering at least 1/PARALLEL_SCAN_SHARE of the table's positions is read by DuckDB's
#: parallel scan of the table instead of through the index (NativeAdapter.parallel_batch). Measured
#: (benchmarks/RESULTS.md), batch time index / scan: 1.2 M-event table, 4 % of it 0.7, 12 % 1.3, 25 % 1.4;
#: 4 M-event table, 12 % 1.15 with 120 MiB more peak RSS. Each scan reads the whole table on the store, so
#: a quarter: at most about four passes over it per table's worth of events.
PARALLEL_SCAN_SHARE = 4
# The next batch's extent, on the index alone: how many events, their position range, the last one.
_EXTENT = (
    "WITH b AS (SELECT e.transaction_id, e.global_position FROM {table} AS e "
    "WHERE (e.transaction_id, e.global_position) > ('{tx}'::xid8, {pos}) AND e.transaction_id < '{bound}'::xid8 "
    "ORDER BY e.transaction_id, e.global_position LIMIT {limit}), "
    "l AS (SELECT transaction_id, global_position FROM b ORDER BY transaction_id DESC, global_position DESC LIMIT 1) "
    "SELECT (SELECT count(*) FROM b), (SELECT min(global_position) FROM b), (SELECT max(global_position) FROM b), "
    "(SELECT transaction_id::text::bigint FROM l), (SELECT global_position FROM l)"
)
# Positions the table spans (its primary key's two ends): what a scan of it reads, roughly; and the last one.
_SPAN = "SELECT max(global_position) - min(global_position) + 1, max(global_position) FROM {table}"
#: Backends reading slices at once. On the 2-core machine measured (benchmarks/RESULTS.md)
#: two beat one and three were no faster: server and client share the same CPUs there.
READ_WORKERS = 2
#: Events per slice (at least one batch): large enough that starting a query is noise,
#: small enough that (READ_WORKERS + 1) slices in memory stay modest.
SLICE_EVENTS = 100_000


@dataclass(frozen=True)
class ParallelBatch:
    """An ingest batch read by DuckDB's parallel scan of the table: its SQL and its events."""

    sql: str
    #: The batch's events, as counted on the index; None when the batch is every settled event left (not counted).
    events: int | None
    #: The optional ingest columns the SQL returns (the ids are lifted from ``metadata`` by the ingest).
    columns: frozenset[str] = frozenset({"is_archived", "tenant_id"})


class NativeReader(StoreConnection):
    """Reads settled events of a native store table as Arrow record batches."""

    #: The gap-safety strategy (see the module docstring); adapters name theirs the same way.
    gap_safety = "transaction-snapshot"

    def __init__(self, dsn: str, schema: str = "public", table: str = "events") -> None:
        super().__init__(dsn, schema)
        self.table = table
        self._table_sql = table_ref(schema, table).as_string(None)
        # Tuning knobs, private: benchmarks force one backend, tests force tiny slices.
        self._read_workers = READ_WORKERS
        self._slice_events = SLICE_EVENTS

    def head(self) -> Head:
        """The safe head now: the transaction bound and the last event below it."""
        return self.in_session(lambda conn: snapshot_head(conn, self._table_sql))

    def query(
        self, after: Checkpoint, bound: int, limit: int | None = None, *, ids: bool = False, tenant: str | None = None
    ) -> str:
        """The PostgreSQL query for settled events after ``after`` below transaction ``bound``.

        ``ids`` adds ``correlation_id`` and ``causation_id`` lifted out of ``metadata`` (for the
        ingest): PostgreSQL reads them from the stored jsonb it is already decoding, which costs
        far less than parsing the metadata text again on either side. ``tenant`` adds that column
        of the table, as text, as ``tenant_id``.
        """
        return _SELECT.format(
            table=self._table_sql,
            ids=_IDS if ids else "",
            tenant="" if tenant is None else f', e."{tenant}"::text AS tenant_id',
            tx=int(after.transaction_id),
            pos=int(after.global_position),
            bound=int(bound),
            limit=f" LIMIT {int(limit)}" if limit is not None else "",
        )

    def duckdb_relation_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """DuckDB SQL over the attached store (alias ``store``) returning the same rows."""
        return f"SELECT * FROM postgres_query('store', {quote_literal(self.query(after, bound, limit))})"

    def read(
        self, after: Checkpoint = START, *, batch_size: int = 100_000, until: Head | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Yield settled events after ``after`` up to the safe head (taken now unless ``until``).

        Batches hold at most ``batch_size`` events, in checkpoint order; the checkpoint after a
        batch is its last row's ``(transaction_id, global_position)``.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        bound = (until or self.head()).bound
        if self._read_workers <= 1:
            yield from _batches(self.duckdb(), self.duckdb_relation_sql(after, bound), batch_size)
        else:
            yield from self._read_sliced(after, bound, batch_size)

    def _slice_starts(self, after: Checkpoint, bound: int, size: int) -> Generator[tuple[Checkpoint, bool], None, None]:
        """Where each slice of ``size`` events starts, and whether it is the last one."""
        query = _BOUNDARY.format(table=self._table_sql)
        with connect_read_only(self.dsn) as conn:
            while True:
                row = conn.execute(
                    query, (str(after.transaction_id), after.global_position, str(bound), size - 1)
                ).fetchone()
                yield after, row is None
                if row is None:
                    return
                after = Checkpoint(int(row[0]), int(row[1]))

    def _read_sliced(self, after: Checkpoint, bound: int, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Read slices on several backends at once; yield them in order, a bounded few ahead.

        A slice is "the next ``size`` events after its start": sound without a shared snapshot,
        because ``bound`` is a fixed transaction id and every snapshot taken after it sees
        exactly the same (settled) events below it. The LIMIT also keeps each slice's plan an
        ordered index walk; a range condition instead was estimated poorly and some slices got
        a parallel heap scan plus a sort.
        """
        duck = self.duckdb()
        size = max(self._slice_events, batch_size)
        starts = self._slice_starts(after, bound, size)
        first, last = next(starts)
        if last:  # a small read: one query, no threads
            starts.close()
            yield from _batches(duck, self.duckdb_relation_sql(first, bound, size), batch_size)
            return

        def read_slice(cursor: duckdb.DuckDBPyConnection, start: Checkpoint) -> list[pa.RecordBatch]:
            with cursor:  # a DuckDB connection of its own, hence a PostgreSQL backend of its own
                # execute() runs the whole slice with the GIL released; a lazy relation would
                # convert batch by batch under it and serialize the workers.
                result = cursor.execute(self.duckdb_relation_sql(start, bound, size)).to_arrow_reader(batch_size)
                return [batch.cast(positions.EVENT_SCHEMA) for batch in result if batch.num_rows]

        def checked(slice_: Future[list[pa.RecordBatch]], following: Checkpoint | None) -> list[pa.RecordBatch]:
            batches = slice_.result()
            # A slice must end right where the next one starts. It cannot do otherwise unless
            # settled events were deleted mid-read, which an append-only store never does.
            end = checkpoint_of(batches[-1]) if batches else None
            if following is not None and end != following:
                raise TerminalError(
                    f"settled events of {self.schema}.{self.table} changed during a read (a slice ended at "
                    f"{end}, not at {following}): events were deleted or rewritten below the safe head. "
                    "The batches yielded before this error are sound; find what deletes events, then read again."
                )
            return batches

        pool = ThreadPoolExecutor(self._read_workers, thread_name_prefix="event-reader")
        ahead: deque[tuple[Checkpoint, Future[list[pa.RecordBatch]]]] = deque()
        try:
            for start in itertools.chain([first], (start for start, _ in starts)):
                ahead.append((start, pool.submit(read_slice, duck.cursor(), start)))
                if len(ahead) > self._read_workers:
                    # Every worker stays busy while the caller consumes the oldest slice: at
                    # most workers + 1 slices are in memory.
                    yield from checked(ahead.popleft()[1], ahead[0][0])
            while ahead:
                _, oldest = ahead.popleft()
                yield from checked(oldest, ahead[0][0] if ahead else None)
        finally:
            for _, future in ahead:
                future.cancel()
            pool.shutdown(wait=True)
            starts.close()


def _batches(con: duckdb.DuckDBPyConnection, relation_sql: str, batch_size: int) -> Iterator[pa.RecordBatch]:
    for batch in con.sql(relation_sql).to_arrow_reader(batch_size):
        if batch.num_rows:
            yield batch.cast(positions.EVENT_SCHEMA)


def _fetch_int(conn: Any, query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0])


def with_adapter_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A native ``EVENT_SCHEMA`` batch with ``is_archived`` false and ``tenant_id`` null appended."""
    import pyarrow as pa

    rows = batch.num_rows
    columns = [*batch.columns, pa.array([False] * rows, pa.bool_()), pa.nulls(rows, pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=adapter_schema())


class NativeAdapter:
    """The native reader, yielding ``ADAPTER_SCHEMA`` batches."""

    kind = "native"
    gap_safety = NativeReader.gap_safety
    bound_kind = "transaction_id"
    own_tenant: str | None = None  # the native table has no tenant: PROJECTIONIST_TENANT_FIELD says where it is
    tenant_columns = True

    def __init__(
        self, dsn: str, schema: str = "public", table: str = DEFAULT_TABLE, tenant_column: str | None = None
    ) -> None:
        self.reader = NativeReader(dsn, schema, table)
        self.dsn = dsn
        self.schema = schema
        self.table = table
        self.tenant_column = tenant_column  # a column of the table holding each event's tenant (ingested as tenant_id)
        self._parallel_share = PARALLEL_SCAN_SHARE  # tests set it: 0 never scans, a large one always does

    @classmethod
    def recognize(cls, table: CatalogTable) -> str | None:
        """A table with an ``xid8`` transaction id, ``global_position`` and ``stream_version``."""
        columns = table.columns
        found = columns.get("transaction_id") == "xid8" and {"global_position", "stream_version"} <= columns.keys()
        return cls.kind if found else None

    @classmethod
    def from_settings(cls, settings: Settings, dsn: str) -> NativeAdapter:
        """The configured native table, checked first: a missing one is a clear error, not an empty read."""
        schema, table = settings.store_schema, settings.store_table
        found = next((t for t in catalog_tables(dsn, schema) if t.name == table and cls.recognize(t)), None)
        if found is None:
            raise StoreMismatchError(
                f"PROJECTIONIST_EVENT_STORE_KIND=native expects the native event table {schema}.{table} "
                f"(global_position, transaction_id xid8, stream_version, ...) in {describe_dsn(dsn)}, and it is not "
                "there. For a new native store run `projectionist init`."
            )
        field = settings.tenant_field
        column = field.name if field is not None and field.place == "column" else None
        if column is not None and column not in found.columns:
            raise StoreMismatchError(
                f"PROJECTIONIST_TENANT_FIELD={field} names a column {schema}.{table} does not have (it has "
                f"{', '.join(found.columns)}): name the column that holds the tenant, or a field "
                f"(metadata.{column}, data.{column}). Nothing was read."
            )
        return cls(dsn, schema, table, column)

    def pending(self, after: Checkpoint) -> tuple[int, datetime | None]:
        """Events after ``after`` (settled or not) and the oldest one's ``recorded_at``, on the table's index."""
        with connect_read_only(self.dsn) as conn:
            table = table_ref(self.schema, self.table).as_string(conn)
            row = conn.execute(
                f"SELECT count(*), min(recorded_at) FROM {table} "
                "WHERE (transaction_id, global_position) > (%s::text::xid8, %s)",
                (str(after.transaction_id), after.global_position),
            ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def head(self, after: Checkpoint = START) -> Head:
        """The safe head (``after`` is accepted for the adapter protocol; the native bound needs no history)."""
        return self.reader.head()

    def read(
        self, after: Checkpoint = START, *, batch_size: int = 100_000, until: Head | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The native reader's batches with the adapter columns appended."""
        for batch in self.reader.read(after, batch_size=batch_size, until=until):
            yield with_adapter_columns(batch)

    def query(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The native reader's PostgreSQL query (``EVENT_SCHEMA`` columns)."""
        return self.reader.query(after, bound, limit)

    def duckdb_relation_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The native reader's DuckDB SQL with ``is_archived`` and ``tenant_id`` columns."""
        inner = self.reader.duckdb_relation_sql(after, bound, limit)
        return f"SELECT *, false AS is_archived, NULL::VARCHAR AS tenant_id FROM ({inner})"

    def ingest_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The settled events with ``correlation_id`` and ``causation_id`` lifted out of the stored jsonb inside
        PostgreSQL, in the same pass that turns it into text (no second JSON parse on either side)."""
        lifted = quote_literal(self.reader.query(after, bound, limit, ids=True, tenant=self.tenant_column))
        tenant = "" if self.tenant_column is not None else ", NULL::VARCHAR AS tenant_id"
        return f"SELECT *, false AS is_archived{tenant} FROM postgres_query('store', {lifted})"

    def parallel_batch(
        self, con: duckdb.DuckDBPyConnection, after: Checkpoint, bound: int, limit: int
    ) -> ParallelBatch | None:
        """The next ingest batch as a parallel scan of the table, when it is a large share of it; else None.

        Through the index (:meth:`ingest_sql`) one backend and one DuckDB thread carry a batch: on two cores
        the read and the Parquet write take turns. DuckDB's scan of an attached table splits it into page
        ranges read by several backends, each handing its rows to a thread of its own, as a bare
        ``COPY (SELECT * FROM store.events)`` does. It reads the whole table, with a ``global_position``
        range pushed down, so it is used when the batch is at least 1/:data:`PARALLEL_SCAN_SHARE` of the
        table (a first ingest, a catch-up). The batch is the same as the index's: its extent (the events
        after ``after`` below ``bound``, at most ``limit``, in checkpoint order) is read first on the index,
        and the scan keeps exactly those. ``con`` has the store attached as ``store``, in the transaction
        that will write the batch (both reads see the same settled rows: below the bound, a value).

        When a batch can hold the whole table (``limit`` at least its span of positions) and what is left after
        ``after`` is a large share of it (a first ingest, a catch-up from far behind), the batch is every
        settled event after ``after``: the scan keeps those, with no extent read (on a 1.2 M-event table just
        written, 0.4 s of index and heap visits).
        """
        share = self._parallel_share
        if share <= 0:
            return None
        table = self.reader._table_sql

        def query(sql: str) -> tuple[Any, ...]:
            row = con.execute(f"SELECT * FROM postgres_query('store', {quote_literal(sql)})").fetchone()
            assert row is not None
            return tuple(row)

        span, last = query(_SPAN.format(table=table))
        if span is None or limit * share < span:  # an empty table, or even a full batch is a small share of it
            return None
        tx, pos = int(after.transaction_id), int(after.global_position)
        tenant = f"{quote_identifier(self.tenant_column)}::VARCHAR" if self.tenant_column else "NULL::VARCHAR"
        columns = (
            "SELECT global_position, transaction_id::UBIGINT::BIGINT AS transaction_id, stream_id, stream_type, "
            "stream_version, event_id::VARCHAR AS event_id, event_type, event_version, data, metadata, recorded_at, "
            f"false AS is_archived, {tenant} AS tenant_id "
            f"FROM store.{quote_identifier(self.schema)}.{quote_identifier(self.table)}"
        )
        if limit >= span and (int(last) - pos) * share >= span:
            # Every event of the table fits the batch, so the batch is all that settled after `after`.
            rest = (
                f"transaction_id < {int(bound)} AND transaction_id >= {tx} "
                f"AND (transaction_id > {tx} OR global_position > {pos})"
            )
            return ParallelBatch(f"SELECT * FROM ({columns}) AS s WHERE {rest}", None)
        events, low, high, e_tx, e_pos = query(_EXTENT.format(table=table, tx=tx, pos=pos, bound=bound, limit=limit))
        if not events or events * share < span:
            return None
        scan = f"{columns} WHERE global_position BETWEEN {int(low)} AND {int(high)}"  # pushed down to each backend
        # (after, end] in checkpoint order, below the bound: exactly the extent's events.
        exact = f"transaction_id < {int(bound)} AND {in_range(after, Checkpoint(int(e_tx), int(e_pos)))}"
        return ParallelBatch(f"SELECT * FROM ({scan}) AS s WHERE {exact}", int(events))

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """The native reader's DuckDB connection (store attached as ``store``)."""
        return self.reader.duckdb()

    @property
    def archive_table(self) -> str:
        """The table archived streams move to: ``<table>_archive`` beside the events table."""
        return f"{self.table}_archive"

    def archive_streams(
        self,
        conn: psycopg.Connection[Any],
        streams: Mapping[str, StreamFingerprint],
        *,
        delete: bool = False,
        dry_run: bool = False,
    ) -> StoreArchive:
        """Move the verified streams' rows to ``<table>_archive`` (or delete them with ``delete``)."""
        table = table_ref(self.schema, self.table).as_string(conn)
        archive = table_ref(self.schema, self.archive_table).as_string(conn)
        fingerprint = event_fingerprint_sql("e.event_id", "e.global_position")
        rows = f"SELECT e.stream_id, {fingerprint} AS fingerprint, true AS active FROM {table} AS e"
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (archive,)).fetchone()
        if exists and exists[0]:
            rows += f" UNION ALL SELECT e.stream_id, {fingerprint}, false FROM {archive} AS e"

        def apply(ids: list[str]) -> int:
            if delete:
                return conn.execute(f"DELETE FROM {table} WHERE stream_id = ANY(%s)", (ids,)).rowcount
            conn.execute(f"CREATE TABLE IF NOT EXISTS {archive} (LIKE {table}, PRIMARY KEY (global_position))")
            return conn.execute(
                f"WITH moved AS (DELETE FROM {table} WHERE stream_id = ANY(%s) RETURNING *) "
                f"INSERT INTO {archive} SELECT * FROM moved",
                (ids,),
            ).rowcount

        return archive_verified(conn, streams, rows, apply, gone_is_done=delete, dry_run=dry_run)

    def close(self) -> None:
        """Release the reader's connections."""
        self.reader.close()

    def __enter__(self) -> NativeAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
