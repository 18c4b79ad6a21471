"""What every adapter shares: the lake's columns, bad rows, and the DuckDB read loop."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import duckdb
import pyarrow as pa
from psycopg import sql

from eventstore.connection import connect_read_only, describe_dsn
from eventstore.duck import new_connection
from eventstore.errors import ConfigurationError, UndecodableEventError
from eventstore.positions import EVENT_SCHEMA, START, Checkpoint, Head
from eventstore.quoting import quote_literal

__all__ = [
    "ADAPTER_SCHEMA",
    "BadRow",
    "EventStoreAdapter",
    "SqlAdapter",
    "bad_rows",
    "quote_literal",
    "raise_for_bad_rows",
]

#: The lake's raw event columns (``EVENT_SCHEMA``) plus the two every adapter fills:
#: ``is_archived`` (false where the store has no archive) and ``tenant_id`` (null for the
#: store's default tenant or a store without tenants).
ADAPTER_SCHEMA = EVENT_SCHEMA.append(pa.field("is_archived", pa.bool_())).append(pa.field("tenant_id", pa.string()))

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

    def head(self, after: Checkpoint = START) -> Head: ...

    def read(
        self, after: Checkpoint = START, *, batch_size: int = 100_000, until: Head | None = None
    ) -> Iterator[pa.RecordBatch]: ...

    def query(self, after: Checkpoint, bound: int, limit: int | None = None) -> str: ...

    def duckdb_relation_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str: ...

    def ingest_sql(self, after: Checkpoint, bound: int, limit: int | None = None) -> str:
        """The rows of ``duckdb_relation_sql`` in any order (the ingest does not need DuckDB to sort them)."""
        ...

    def duckdb(self) -> duckdb.DuckDBPyConnection: ...

    def close(self) -> None: ...


class SqlAdapter:
    """Base of the foreign-store adapters: DuckDB attach, the read loop, table checks."""

    kind = ""
    gap_safety = ""
    bound_kind = "transaction_id"

    def __init__(self, dsn: str, schema: str = "public") -> None:
        self.dsn = dsn
        self.schema = schema
        self._duck: duckdb.DuckDBPyConnection | None = None

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

    # -- shared -----------------------------------------------------------------------------
    def ref(self, table: str) -> str:
        """``schema.table`` quoted for PostgreSQL."""
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(table)).as_string(None)

    def duckdb(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with this store attached read-only as ``store``."""
        if self._duck is None:
            con = new_connection("postgres")
            con.execute("SET TimeZone = 'UTC'")
            con.execute(f"ATTACH {quote_literal(self.dsn)} AS store (TYPE postgres, READ_ONLY)")
            self._duck = con
        return self._duck

    def read(
        self, after: Checkpoint = START, *, batch_size: int = 100_000, until: Head | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Yield settled events after ``after`` up to the safe head (taken now unless ``until``)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        bound = (until or self.head(after)).bound
        rel = self.duckdb().sql(self.duckdb_relation_sql(after, bound)).select(*ADAPTER_SCHEMA.names)
        for batch in rel.to_arrow_reader(batch_size):
            if batch.num_rows:
                yield batch.cast(ADAPTER_SCHEMA)

    def close(self) -> None:
        """Release the DuckDB connection (and its PostgreSQL connections)."""
        if self._duck is not None:
            self._duck.close()
            self._duck = None

    def __enter__(self) -> SqlAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            from eventstore.adapters.detect import describe_found

            raise ConfigurationError(
                f"PROJECTIONIST_EVENT_STORE_KIND={self.kind} expects table {self.schema}.{table} in "
                f"{describe_dsn(self.dsn)}, but it does not exist. {describe_found(self.dsn, self.schema)} {hint}"
            )
        wrong = {
            name: found.get(name, "missing")
            for name, kind in wanted.items()
            if not found.get(name, "missing").startswith(kind)
        }
        if wrong:
            listed = ", ".join(f"{name} ({wanted[name]} expected, {got} found)" for name, got in wrong.items())
            raise ConfigurationError(
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
    for batch in [batches] if isinstance(batches, pa.RecordBatch) else batches:
        for row in bad_rows(batch):
            raise UndecodableEventError(row.reason)
