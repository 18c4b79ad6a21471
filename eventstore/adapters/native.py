"""The native store as an adapter: :class:`~eventstore.reader.NativeReader` plus the adapter columns.

The native table has no archive and no tenant, so ``is_archived`` is false and ``tenant_id``
null on every row. Gap safety (``gap_safety = "transaction-snapshot"``) is the native
reader's own, argued in :mod:`eventstore.reader`: rows below
``pg_snapshot_xmin(pg_current_snapshot())`` in ``(transaction_id, global_position)`` order.
The adapter wraps a ``NativeReader`` (it does not reach into its internals).
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa

from eventstore.adapters._base import ADAPTER_SCHEMA
from eventstore.positions import START, Checkpoint, Head
from eventstore.reader import NativeReader

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

    def __init__(self, dsn: str, schema: str = "public", table: str = "events") -> None:
        self.reader = NativeReader(dsn, schema, table)
        self.dsn = dsn

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
        """Same as :meth:`duckdb_relation_sql` (DuckDB does not sort it: PostgreSQL does)."""
        return self.duckdb_relation_sql(after, bound, limit)

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
