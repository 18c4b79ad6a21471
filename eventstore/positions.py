"""Positions in an event store: checkpoints, the safe head, and the raw event columns every reader yields.

A **checkpoint** is the last event read, as ``(transaction_id, global_position)``; stores without a
transaction id (Marten, ``eventsourcing``) put 0 in ``transaction_id``, so ``(0, position)`` orders as
the store does. The **head** carries the reader's *bound*: events below it are settled (a transaction
id for the stores read by transaction snapshot, a proven position for those read by a high-water
mark; the adapter's ``bound_kind`` says which). A **holder** is the open transaction that keeps the
bound from moving.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from eventstore.connection import connect_read_only

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EVENT_SCHEMA", "START", "Checkpoint", "Head", "Holder", "checkpoint_of", "in_range", "open_transaction"]


@dataclass(frozen=True, order=True)
class Checkpoint:
    """The last event read: ``(transaction_id, global_position)``; reading resumes after it."""

    transaction_id: int = 0
    global_position: int = 0

    def __str__(self) -> str:
        return f"{self.transaction_id}/{self.global_position}"


START = Checkpoint()


def in_range(after: Checkpoint, until: Checkpoint) -> str:
    """SQL (DuckDB): the event is in ``(after, until]`` in checkpoint order.

    Plain bounds on ``transaction_id`` first: they reach a Parquet scan (files and row groups outside are
    skipped), which a row comparison or an OR alone would not.
    """
    a_tx, a_pos = int(after.transaction_id), int(after.global_position)
    u_tx, u_pos = int(until.transaction_id), int(until.global_position)
    return (
        f"transaction_id >= {a_tx} AND transaction_id <= {u_tx} "
        f"AND (transaction_id > {a_tx} OR global_position > {a_pos}) "
        f"AND (transaction_id < {u_tx} OR global_position <= {u_pos})"
    )


@dataclass(frozen=True)
class Head:
    """The safe head: events below ``bound`` are settled (a transaction id or a position: ``bound_kind``)."""

    bound: int
    last: Checkpoint  # the last settled event, START for an empty store
    events_pending: bool = False  # events exist at or above the bound (in-flight writers)


@dataclass(frozen=True)
class Holder:
    """An open transaction holding the safe head back: who runs it, as far as the reading role may see."""

    transaction_id: int
    pid: int
    user: str | None
    application: str | None
    started_at: datetime | None  # NULL unless the reading role may see the session (its own, or pg_read_all_stats)
    state: str | None

    def describe(self, held_for: float | None = None) -> str:
        """One line for `status` and the follow log."""
        who = [f"pid {self.pid}"]
        if self.user:
            who.append(f"user {self.user}")
        if self.application:
            who.append(f"application {self.application!r}")
        if self.state:
            who.append(self.state)
        if self.started_at is not None:
            age = (datetime.now(UTC) - self.started_at).total_seconds()
            who.append(f"open since {self.started_at:%Y-%m-%d %H:%M:%S} UTC, {_duration(age)}")
        elif held_for is not None:
            who.append(f"seen holding it for {_duration(held_for)}")
        return (
            f"transaction {self.transaction_id} ({', '.join(who)}) holds the safe head back: its events and "
            "every later one are read once it commits or rolls back"
        )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


# The backend whose transaction is the bound (xid8 → its 32-bit xid, as pg_stat_activity shows it).
# Rows of other roles' sessions show pid, user, application and xid, but no times, unless the
# reading role has pg_read_all_stats; a prepared transaction has no backend (pg_prepared_xacts).
_HOLDER = (
    "SELECT backend_xid::text::bigint, pid, usename, application_name, xact_start, state "
    "FROM pg_stat_activity WHERE backend_xid = (%(bound)s::xid8::text::bigint %% 4294967296)::text::xid "
    "UNION ALL SELECT transaction::text::bigint, 0, owner, 'prepared transaction ' || gid, prepared, "
    "'prepared' FROM pg_prepared_xacts WHERE transaction = (%(bound)s::xid8::text::bigint %% 4294967296)::text::xid "
    "LIMIT 1"
)
# For a bound that is not a transaction id (a high-water mark): the oldest writing transaction.
_OLDEST = (
    "SELECT backend_xid::text::bigint, pid, usename, application_name, xact_start, state FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() ORDER BY age(backend_xid) DESC LIMIT 1"
)


def open_transaction(dsn: str, bound: int | None) -> Holder | None:
    """The open transaction whose id is ``bound`` (None: the oldest open writing transaction), if visible."""
    with connect_read_only(dsn) as conn:
        if bound is None:
            row = conn.execute(_OLDEST).fetchone()
        else:
            row = conn.execute(_HOLDER, {"bound": str(bound)}).fetchone()
    if row is None:
        return None
    return Holder(int(row[0]), int(row[1]), row[2], row[3], row[4], row[5])


#: The columns every reader yields, as an Arrow schema; built on first use (:func:`__getattr__`), so that
#: reading checkpoints does not load pyarrow.
EVENT_SCHEMA: pa.Schema


def __getattr__(name: str) -> Any:
    """``EVENT_SCHEMA``, built (and kept) on first use."""
    if name != "EVENT_SCHEMA":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import pyarrow as pa

    schema = pa.schema(
        [
            ("global_position", pa.int64()),
            ("transaction_id", pa.int64()),
            ("stream_id", pa.string()),
            ("stream_type", pa.string()),
            ("stream_version", pa.int64()),
            ("event_id", pa.string()),
            ("event_type", pa.string()),
            ("event_version", pa.int32()),
            ("data", pa.string()),
            ("metadata", pa.string()),
            ("recorded_at", pa.timestamp("us", tz="UTC")),
        ]
    )
    globals()["EVENT_SCHEMA"] = schema
    return schema


def checkpoint_of(batch: pa.RecordBatch) -> Checkpoint:
    """The checkpoint after ``batch``: its last row's position pair."""
    last = batch.num_rows - 1
    return Checkpoint(
        int(batch.column("transaction_id")[last].as_py()), int(batch.column("global_position")[last].as_py())
    )
