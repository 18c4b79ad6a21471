"""The native store as an adapter: :class:`~eventstore.reader.NativeReader` plus the adapter columns.

The native table has no archive and no tenant, so ``is_archived`` is false and ``tenant_id``
null on every row. Gap safety (``gap_safety = "transaction-snapshot"``) is the native
reader's own, argued in :mod:`eventstore.reader`: rows below
``pg_snapshot_xmin(pg_current_snapshot())`` in ``(transaction_id, global_position)`` order.
The adapter wraps a ``NativeReader`` (it does not reach into its internals).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import duckdb
import pyarrow as pa

from eventstore.adapters._base import ADAPTER_SCHEMA, DEFAULT_TABLE, CatalogTable, StoreMismatchError, catalog_tables
from eventstore.connection import connect_read_only, describe_dsn
from eventstore.native import table_ref
from eventstore.positions import START, Checkpoint, Head
from eventstore.quoting import quote_literal
from eventstore.reader import NativeReader
from eventstore.settings import Settings

__all__ = ["NativeAdapter", "with_adapter_columns"]


def with_adapter_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A native ``EVENT_SCHEMA`` batch with ``is_archived`` false and ``tenant_id`` null appended."""
    rows = batch.num_rows
    columns = [*batch.columns, pa.array([False] * rows, pa.bool_()), pa.nulls(rows, pa.string())]
    return pa.RecordBatch.from_arrays(columns, schema=ADAPTER_SCHEMA)


class NativeAdapter:
    """The native reader, yielding ``ADAPTER_SCHEMA`` batches."""

    kind = "native"
    gap_safety = NativeReader.gap_safety
    bound_kind = "transaction_id"

    def __init__(self, dsn: str, schema: str = "public", table: str = DEFAULT_TABLE) -> None:
        self.reader = NativeReader(dsn, schema, table)
        self.dsn = dsn
        self.schema = schema
        self.table = table

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
        if not any(t.name == table and cls.recognize(t) for t in catalog_tables(dsn, schema)):
            raise StoreMismatchError(
                f"PROJECTIONIST_EVENT_STORE_KIND=native expects the native event table {schema}.{table} "
                f"(global_position, transaction_id xid8, stream_version, ...) in {describe_dsn(dsn)}, and it is not "
                "there. For a new native store run `projectionist init`."
            )
        return cls(dsn, schema, table)

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
        lifted = quote_literal(self.reader.query(after, bound, limit, ids=True))
        return f"SELECT *, false AS is_archived, NULL::VARCHAR AS tenant_id FROM postgres_query('store', {lifted})"

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """The native reader's DuckDB connection (store attached as ``store``)."""
        return self.reader.duckdb()

    def close(self) -> None:
        """Release the reader's connections."""
        self.reader.close()

    def __enter__(self) -> NativeAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
