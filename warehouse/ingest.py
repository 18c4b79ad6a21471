"""Ingest: settled events of a store → ``raw.events``, one checkpointed DuckLake commit per batch.

Each batch is one DuckDB transaction on the lake that (1) re-reads the checkpoints, (2) runs
``INSERT INTO raw.events SELECT … FROM postgres_query(<gap-safe keyset query>)`` — rows go
PostgreSQL → DuckDB → Parquet without Python touching them; a batch that is a large share of a native
table is read instead by DuckDB's parallel scan of it, keeping the same events; with ``stage`` (``follow``)
the batch goes through a temporary table that its own reads and the cycle's projections then use —,
(3) reads the batch's last position back from the rows it wrote, (4) adds a row to ``meta.ingest_commits``
(when, the checkpoint reached, the store head read towards: the lag's history), (5) runs the caller's
``in_commit`` work, if any (the event catalog rides there), and (6) moves the checkpoint rows in
``meta.checkpoints``, the batch's and those ``in_commit`` moved, in one statement. DuckLake commits it all
as one snapshot, so a crash at any instant
leaves the lake before or after a batch, never between. A second ingest racing the first
conflicts on the checkpoint row and re-reads it: no event lands twice.

A source is anything with the small interface of :class:`EventSource`: in practice
:class:`warehouse.sources.StoreSource`, which wraps the adapter of any store kind.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import duckdb

from eventstore.connection import describe_dsn, libpq_conninfo
from eventstore.failures import translated
from eventstore.identity import StoreIdentity
from eventstore.positions import START, Checkpoint, Head
from eventstore.quoting import quote_literal
from eventstore.settings import TenantField
from warehouse.errors import LakeConfigurationError
from warehouse.lake import RAW_EVENT_COLUMNS, retry_conflicts, rewriting, transaction
from warehouse.time_travel import commit_info

if TYPE_CHECKING:
    from eventstore.adapters.native import ParallelBatch

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "INGEST_CONSUMER",
    "INGEST_DEAD_LETTER",
    "EventSource",
    "IngestResult",
    "LandedBatch",
    "attach_store",
    "check_store",
    "compact",
    "compact_over",
    "drop_staged",
    "ingest",
    "lake_checkpoint",
    "lake_store",
    "table_files",
]

#: Events per lake commit when the caller does not say (the CLI's ``--batch-size``, Dagster's ``raw_events``).
#: A batch streams from the store into Parquet, so memory does not grow with it: 10 M events under the
#: CLI's 512MB memory limit peaked at 503 MiB RSS in batches of 500,000 and 403 MiB in batches of 2,000,000
#: (benchmarks/RESULTS.md). A larger batch is fewer commits and, for a first ingest or a catch-up, fewer
#: passes of the parallel scan over the store's table (a table of up to 2 M events in one).
DEFAULT_BATCH_SIZE = 2_000_000

INGEST_CONSUMER = "ingest"
#: meta.dead_letters.projection of events the ingest could not decode (kept in raw.events with data null).
INGEST_DEAD_LETTER = "*ingest*"
STORE_ALIAS = "store"  # the store's alias in the lake connection (as in NativeReader.duckdb_relation_sql)


class EventSource(Protocol):
    """A store the ingest can read: its name, its safe head, and its gap-safe batches as DuckDB SQL."""

    @property
    def name(self) -> str:
        """Value of ``raw.events.source``, e.g. ``native:public.events``."""
        ...

    def head(self, after: Checkpoint = START) -> Head:
        """The safe head now (the bound of settled events, and the last settled event).

        ``after`` is the lake's checkpoint: events at or below it are settled, which a
        high-water-mark source builds its proof on.
        """
        ...

    def attach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Attach the store read-only to ``con`` as ``store`` (unless it already is)."""
        ...

    @property
    def tenant_field(self) -> TenantField | None:
        """Where an event's tenant is, for a store without tenants of its own (``PROJECTIONIST_TENANT_FIELD``)."""
        ...

    def identity(self) -> StoreIdentity:
        """Which store this is (server, database, schema, table): a lake holds one (read once per source)."""
        ...

    def pending(self, after: Checkpoint) -> tuple[int, datetime | None]:
        """Events after ``after`` (settled or not) and the oldest one's ``recorded_at``: the lake's lag."""
        ...

    def batch_sql(self, after: Checkpoint, bound: int, limit: int | None) -> str:
        """DuckDB SQL over ``store`` for settled events after ``after`` below ``bound``, in checkpoint order.

        Columns: those of ``eventstore.adapters.native.EVENT_SCHEMA``; optionally ``correlation_id`` and
        ``causation_id`` (else lifted out of ``metadata`` here), ``is_archived`` and ``tenant_id``.
        """
        ...

    def parallel_batch(
        self, con: duckdb.DuckDBPyConnection, after: Checkpoint, bound: int, limit: int
    ) -> ParallelBatch | None:
        """The same batch as :meth:`batch_sql`'s, read by a parallel scan, when that is faster; else None."""
        ...


#: What to check when reading the store fails for good (wrong role, grants, table).
READ_FIX = (
    "Check PROJECTIONIST_EVENT_STORE_DSN and that its role holds the grants docs/stores.md lists "
    "(CONNECT, USAGE, SELECT); retrying will not help"
)


def attach_store(con: duckdb.DuckDBPyConnection, dsn: str) -> None:
    """Attach the event store at ``dsn`` read-only to ``con`` as ``store``, unless it already is."""
    params = libpq_conninfo(dsn)
    with translated(
        f"cannot attach the event store {describe_dsn(dsn)} to DuckDB",
        fix=READ_FIX,
        secrets=(dsn, str(params.get("password") or "")),
    ):
        con.execute(f"ATTACH IF NOT EXISTS {quote_literal(dsn)} AS {STORE_ALIAS} (TYPE postgres, READ_ONLY)")


@dataclass(frozen=True)
class LandedBatch:
    """A batch inside its transaction, as ``ingest(in_commit=…)`` sees it once the checkpoint has moved.

    ``(after, until]`` is the batch's range; ``checkpoints`` every consumer's checkpoint as the transaction
    read it before the batch moved ``ingest`` (a consumer that rides along, the event catalog, finds its own
    there without a statement). ``table``, when the ingest was asked to ``stage``, is a temporary table
    holding exactly the batch's rows with ``raw.events``' columns: later work of the same cycle reads the
    batch from it instead of from the lake (``follow``'s projections, :mod:`warehouse.versions.cycle`).
    It outlives the commit; whoever asked for it drops it (:func:`drop_staged`).
    """

    after: Checkpoint
    until: Checkpoint
    events: int
    checkpoints: dict[str, Checkpoint]
    table: str | None = None
    #: Other consumers' checkpoints to move in the batch's commit (:meth:`move`): consumer → (checkpoint, events).
    moves: dict[str, tuple[Checkpoint, int]] = field(default_factory=dict)

    def move(self, consumer: str, checkpoint: Checkpoint, events: int) -> None:
        """Move ``consumer``'s checkpoint to ``checkpoint`` (``events`` more) with the batch's, in one statement."""
        self.moves[consumer] = (checkpoint, events)


@dataclass(frozen=True)
class IngestResult:
    """What one ingest run did."""

    events: int
    batches: int
    checkpoint: Checkpoint
    head: Head
    seconds: float
    compacted: bool = False
    #: Batches read by a parallel scan of the store's table (a large share of it) rather than its index.
    scanned: int = 0
    #: The last batch committed, when the ingest was asked to ``stage`` it (its ``table`` holds its rows).
    staged: LandedBatch | None = None
    #: The source's optional columns, as this run described them (None: it read nothing); see ``ingest(columns=)``.
    columns: frozenset[str] | None = None


def lake_checkpoint(con: duckdb.DuckDBPyConnection, consumer: str = INGEST_CONSUMER) -> tuple[Checkpoint, int]:
    """The consumer's checkpoint and event count in the lake (START, 0 before its first commit)."""
    row = con.execute(
        "SELECT transaction_id, global_position, events FROM meta.checkpoints WHERE consumer = ?", [consumer]
    ).fetchone()
    if row is None:
        return START, 0
    return Checkpoint(int(row[0]), int(row[1])), int(row[2])


# The ingest checkpoint and the store the lake holds, in one read. (FILTER rather than WHERE: DuckLake
# answers a WHERE pushed into its scan with extra catalog queries, see warehouse.versions.rebuild_plan._START.)
_STORE = "SELECT any_value([kind, system_identifier, database_name, schema_name, table_name]) FROM meta.store"
_START = (
    "SELECT (SELECT any_value([source, transaction_id::VARCHAR, global_position::VARCHAR]) FILTER (WHERE consumer = ?) "
    f"FROM meta.checkpoints), ({_STORE})"
)


def lake_store(con: duckdb.DuckDBPyConnection) -> StoreIdentity | None:
    """The store the lake holds (None before its first ingest)."""
    row = con.execute(_STORE).fetchone()
    return _recorded_store(row[0] if row else None)


def _recorded_store(row: list[str | None] | None) -> StoreIdentity | None:
    if row is None:
        return None
    kind, system, database, schema, table = row
    return StoreIdentity(str(kind), system, str(database), str(schema), str(table))


def check_store(recorded: StoreIdentity | None, source: EventSource) -> None:
    """Refuse ``source`` when the lake holds another store's events (terminal: nothing is written)."""
    if recorded is None:
        return
    reading = source.identity()
    if not recorded.matches(reading):
        raise LakeConfigurationError(
            f"this lake holds the events of {recorded}, not of {reading}: its checkpoint means nothing "
            "there. Use another home for this store (PROJECTIONIST_HOME or --home; or PROJECTIONIST_LAKE and "
            "PROJECTIONIST_LAKE_DATA), or point PROJECTIONIST_EVENT_STORE_DSN back at the store it holds. "
            "Nothing was written."
        )


def _checked_checkpoint(con: duckdb.DuckDBPyConnection, source: EventSource) -> tuple[Checkpoint, bool]:
    """The ingest checkpoint, after checking that the lake holds ``source``'s events; and whether it says so yet."""
    row = con.execute(_START, [INGEST_CONSUMER]).fetchone()
    checkpoint, store = row if row is not None else (None, None)
    check_store(_recorded_store(store), source)
    if checkpoint is None:
        return START, store is not None
    if checkpoint[0] is not None and checkpoint[0] != source.name:
        raise LakeConfigurationError(
            f"this lake holds the events of {checkpoint[0]}, not of {source.name}: point PROJECTIONIST_LAKE "
            "(and PROJECTIONIST_LAKE_DATA) at another lake for this store. Nothing was written."
        )
    return Checkpoint(int(str(checkpoint[1])), int(str(checkpoint[2]))), store is not None


def _record_store(con: duckdb.DuckDBPyConnection, source: EventSource) -> None:
    """Record the store the lake holds, once. Two first ingests of different stores race here: both also
    write the checkpoint row, so DuckLake lets one commit and the other retries, finds the row and compares."""
    identity = source.identity()

    def record() -> None:
        with transaction(con):
            row = con.execute(_START, [INGEST_CONSUMER]).fetchone()
            recorded = _recorded_store(row[1] if row else None)
            if recorded is None:
                con.execute(
                    "INSERT INTO meta.store VALUES (?, ?, ?, ?, ?, get_current_timestamp())",
                    [identity.kind, identity.system_identifier, identity.database, identity.schema, identity.table],
                )
                con.execute("UPDATE meta.checkpoints SET source = ? WHERE consumer = ?", [source.name, INGEST_CONSUMER])
        check_store(recorded, source)

    retry_conflicts(record, f"recording the store of this lake ({identity})")


def select_raw(source: EventSource, batch: str, optional: set[str]) -> str:
    """Map a source batch onto raw.events' columns: the one place source/is_archived/tenant_id are filled."""
    tenant = "b.tenant_id::VARCHAR" if "tenant_id" in optional else "NULL::VARCHAR"
    field = source.tenant_field
    if field is not None and field.place != "column":  # a column comes from the adapter as tenant_id
        tenant = f"json_extract_string(b.{field.place}, {quote_literal('$.' + field.name)})"
    computed = {
        "data": "b.data::JSON",
        "metadata": "b.metadata::JSON",
        "correlation_id": "b.correlation_id" if "correlation_id" in optional else "b._ids[1]",
        "causation_id": "b.causation_id" if "causation_id" in optional else "b._ids[2]",
        "ingested_at": "get_current_timestamp()",
        "source": quote_literal(source.name),
        "is_archived": "coalesce(b.is_archived, false)" if "is_archived" in optional else "false",
        "tenant_id": tenant,
    }
    columns = ", ".join(f"{computed.get(name, f'b.{name}')}::{kind} AS {name}" for name, kind, _ in RAW_EVENT_COLUMNS)
    if {"correlation_id", "causation_id"} <= optional:
        return f"SELECT {columns} FROM ({batch}) AS b"
    # One parse of metadata for both ids.
    ids = "json_extract_string(s.metadata, ['$.correlation_id', '$.causation_id']) AS _ids"
    return f"SELECT {columns} FROM (SELECT s.*, {ids} FROM ({batch}) AS s) AS b"


def _checkpoints(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[Checkpoint, int]]:
    """Every consumer's checkpoint and event count (a handful of rows: one statement for all)."""
    rows = con.execute("SELECT consumer, transaction_id, global_position, events FROM meta.checkpoints").fetchall()
    return {str(c): (Checkpoint(int(t), int(p)), int(n or 0)) for c, t, p, n in rows if t is not None}


def _commit_batch(
    con: duckdb.DuckDBPyConnection,
    source: EventSource,
    after: Checkpoint,
    head: Head,
    limit: int,
    optional: set[str],
    in_commit: Callable[[duckdb.DuckDBPyConnection, LandedBatch], None] | None = None,
    stage: str | None = None,
) -> tuple[LandedBatch | None, bool]:
    """One lake transaction: up to ``limit`` events after ``after``, the moved checkpoint, a meta.ingest_commits row.

    Returns the batch committed (None when there was nothing to write: then nothing is committed, no empty
    snapshot) and whether a parallel scan read it. ``stage``: the name of a temporary table that receives the
    batch first and keeps it after the commit (:class:`LandedBatch`); the batch's own reads (its end, its
    undecodable events, ``in_commit``'s) then cost no lake scan.
    """
    with transaction(con) as tx:
        points = _checkpoints(con)
        current, lake_events = points.get(INGEST_CONSUMER, (START, 0))
        if current != after:
            raise duckdb.TransactionException("checkpoint moved by another ingest: conflict")
        parallel = source.parallel_batch(con, after, head.bound, limit)
        if parallel is not None:
            batch = select_raw(source, parallel.sql, set(parallel.columns))
        else:
            batch = select_raw(source, source.batch_sql(after, head.bound, limit), optional)
        if stage is not None:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {stage} AS {batch}")
            batch = f"SELECT * FROM temp.main.{stage}"
        inserted = con.execute(f"INSERT INTO raw.events {batch}").fetchone()
        count = int(inserted[0]) if inserted else 0
        if parallel is not None and parallel.events is not None and count != parallel.events:
            # Both reads see the same settled rows; only rows deleted in between (a store archive moving
            # events the lake does not hold yet, which it refuses to do) could differ. Read again.
            raise duckdb.TransactionException(
                f"the parallel scan found {count} of the batch's {parallel.events} events: conflict"
            )
        if count == 0:
            tx.abandon()  # the staged table too: an earlier batch's, replaced in this transaction, is back
            return None, False
        # The batch's last event is the lake's newest row: everything before it is at or below `after`.
        # Read back from the staged rows, or from the rows written (this transaction's new files only,
        # pruned by transaction_id): either spares a second pass over the store.
        written = f"temp.main.{stage}" if stage is not None else "raw.events"
        row = con.execute(
            f"SELECT transaction_id, global_position FROM {written} WHERE transaction_id >= ? "
            "ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
            [after.transaction_id],
        ).fetchone()
        assert row is not None
        end = Checkpoint(int(row[0]), int(row[1]))
        _dead_letter_bad_rows(con, after, written)
        con.execute(  # the checkpoint in the commit: time travel by store position (warehouse.time_travel)
            "CALL ducklake_set_commit_message('lake', 'projectionist', ?, extra_info => ?)",
            [f"ingest {source.name} {after} → {end}: {count} events", commit_info(end)],
        )
        # The lag's history (`projectionist report`): where this commit left the lake, and the head it read
        # towards. Written from what this transaction knows (a read of meta.checkpoints costs a catalog scan).
        con.execute(
            "INSERT INTO meta.ingest_commits VALUES (get_current_timestamp(), ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                source.name,
                end.transaction_id,
                end.global_position,
                count,
                lake_events + count,
                head.bound,
                head.last.transaction_id,
                head.last.global_position,
            ],
        )
        landed = LandedBatch(after, end, count, {c: p for c, (p, _) in points.items()}, stage)
        if in_commit is not None:  # its work commits with the batch; the checkpoints it moves, in the statement below
            in_commit(con, landed)
        _move_checkpoints(
            con,
            [(INGEST_CONSUMER, source.name, end, count)]
            + [(consumer, None, checkpoint, events) for consumer, (checkpoint, events) in landed.moves.items()],
        )
    return landed, parallel is not None


def _move_checkpoints(con: duckdb.DuckDBPyConnection, moves: list[tuple[str, str | None, Checkpoint, int]]) -> None:
    """Move consumers' checkpoints in one statement: (consumer, source or None to keep it, checkpoint, events added)."""
    rows = ", ".join("(?, ?, ?, ?, ?)" for _ in moves)
    con.execute(
        "UPDATE meta.checkpoints AS c SET source = coalesce(m.source, c.source), transaction_id = m.tx, "
        "global_position = m.pos, events = c.events + m.added, batches = c.batches + 1, "
        f"updated_at = get_current_timestamp() FROM (VALUES {rows}) AS m(consumer, source, tx, pos, added) "
        "WHERE c.consumer = m.consumer",
        [
            v
            for consumer, name, at, added in moves
            for v in (consumer, name, at.transaction_id, at.global_position, added)
        ],
    )


def drop_staged(con: duckdb.DuckDBPyConnection, batch: LandedBatch | None) -> None:
    """Drop a staged batch's temporary table (nothing when there is none)."""
    if batch is not None and batch.table is not None:
        con.execute(f"DROP TABLE IF EXISTS temp.main.{batch.table}")


def _dead_letter_bad_rows(con: duckdb.DuckDBPyConnection, after: Checkpoint, written: str = "raw.events") -> None:
    """List this batch's undecodable events (``data`` null) in meta.dead_letters, in the batch's transaction.

    The events themselves stay in raw.events as stored (``data`` null, ``metadata.decode_error``),
    in their place in checkpoint order: nothing read is lost, and the checkpoint moves past them.
    """
    tx, pos = after.transaction_id, after.global_position
    # transaction_id >= tx prunes the files of earlier batches; the OR is the exact "after".
    con.execute(
        "INSERT INTO meta.dead_letters SELECT event_id, global_position, ?, NULL, "
        "coalesce(json_extract_string(metadata, '$.decode_error'), 'payload missing'), get_current_timestamp() "
        f"FROM {written} WHERE transaction_id >= ? AND (transaction_id > ? OR global_position > ?) AND data IS NULL",
        [INGEST_DEAD_LETTER, tx, tx, pos],
    )


def optional_columns(con: duckdb.DuckDBPyConnection, source: EventSource, bound: int) -> set[str]:
    described = con.execute(f"DESCRIBE {source.batch_sql(START, bound, 0)}").fetchall()
    return {str(row[0]) for row in described} & {"is_archived", "tenant_id", "correlation_id", "causation_id"}


def ingest(
    con: duckdb.DuckDBPyConnection,
    source: EventSource,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batches: int | None = None,
    progress: Callable[[int], None] | None = None,
    compact_after: int | None = 64,
    in_commit: Callable[[duckdb.DuckDBPyConnection, LandedBatch], None] | None = None,
    stage: bool = False,
    start: tuple[Checkpoint, Head] | None = None,
    columns: frozenset[str] | None = None,
) -> IngestResult:
    """Land every settled event of ``source`` not yet in the lake; one commit per batch.

    ``con`` is a writable lake connection (``open_lake``). ``progress`` is called with the events
    of each committed batch. When ``compact_after`` is set and the run committed something, small
    adjacent files are merged once raw.events holds more than that many data files.
    ``in_commit(con, batch)`` (a :class:`LandedBatch`) runs inside each batch's transaction, after its
    rows were written (again if the batch is retried after a conflict): work that belongs with the batch
    commits with it, not in a commit of its own, and the checkpoints it moves (:meth:`LandedBatch.move`)
    move in the batch's own statement. ``stage``: each batch goes through a temporary table
    first, and the last one's stays for the caller (:attr:`IngestResult.staged`; drop it with
    :func:`drop_staged`): keep ``batch_size`` to what memory holds twice. ``start``: the lake's checkpoint
    and the store's head as the caller has just read them, on a lake and a store it has already checked
    belong together (``follow``'s later cycles): the run starts there without reading either again (a
    checkpoint moved meanwhile is found by the batch's transaction, which then reads it). ``columns``: the
    optional columns an earlier run found in the same source object's batches (:attr:`IngestResult.columns`);
    its SQL does not change, so they are not described again (a round trip to the store). A failure of
    PostgreSQL or DuckDB is raised as a transient or terminal error (:mod:`eventstore.failures`);
    the batches committed before it stay.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    with translated(f"ingesting {source.name} failed", fix=READ_FIX):
        return _ingest(con, source, batch_size, max_batches, progress, compact_after, in_commit, stage, start, columns)


def _ingest(
    con: duckdb.DuckDBPyConnection,
    source: EventSource,
    batch_size: int,
    max_batches: int | None,
    progress: Callable[[int], None] | None,
    compact_after: int | None,
    in_commit: Callable[[duckdb.DuckDBPyConnection, LandedBatch], None] | None,
    stage: bool,
    start: tuple[Checkpoint, Head] | None,
    columns: frozenset[str] | None,
) -> IngestResult:
    started = time.monotonic()
    if start is not None:
        checkpoint, head = start
    else:
        checkpoint, known = _checked_checkpoint(con, source)
        head = source.head(checkpoint)  # first: an unreachable store fails here with a clear message
        if not known:
            _record_store(con, source)
    if (head.last.transaction_id, head.last.global_position) <= (checkpoint.transaction_id, checkpoint.global_position):
        # Nothing settled after the checkpoint: no attach, no batch (an idle `follow` cycle stops here).
        return IngestResult(0, 0, checkpoint, head, time.monotonic() - started)
    source.attach(con)  # ATTACH IF NOT EXISTS: a connection that already has the store keeps it
    optional = set(columns) if columns is not None else optional_columns(con, source, head.bound)

    staged = f"_ingest_batch_{uuid.uuid4().hex[:12]}" if stage else None

    read: list[Checkpoint] = []  # where the last try started: the lake's checkpoint as last known

    def batch_from(known: Checkpoint) -> Callable[[], tuple[LandedBatch | None, bool]]:
        tries = [known]

        def one_batch() -> tuple[LandedBatch | None, bool]:
            # The first try starts where this run knows the lake stands (the batch's transaction
            # checks it again); a retry after a conflict reads where another writer left it.
            after = tries.pop() if tries else lake_checkpoint(con)[0]
            read.append(after)
            return _commit_batch(con, source, after, head, batch_size, optional, in_commit, staged)

        return one_batch

    events = batches = scanned = 0
    last: LandedBatch | None = None
    while max_batches is None or batches < max_batches:
        try:
            one_batch = batch_from(checkpoint)
            landed, parallel = retry_conflicts(one_batch, f"ingesting a batch of {source.name}")
        except duckdb.OutOfMemoryException as exc:
            raise LakeConfigurationError(
                f"a batch of {batch_size:,} events did not fit DuckDB's memory limit ({str(exc).splitlines()[0]}): "
                "lower --batch-size or raise --memory-limit. Committed batches are kept; rerun to continue."
            ) from exc
        if landed is None:
            checkpoint = read[-1]  # another writer may have moved it (and landed these events) meanwhile
            break
        written, checkpoint, last = landed.events, landed.until, landed
        events += written
        batches += 1
        scanned += parallel
        if progress is not None:
            progress(written)
        if written < batch_size:
            break  # a batch short of its LIMIT read every settled event below the bound: done
    compacted = compact_after is not None and batches > 0 and compact_over(con, compact_after)
    seconds = time.monotonic() - started
    staged_batch = last if stage else None
    return IngestResult(
        events, batches, checkpoint, head, seconds, compacted, scanned, staged_batch, frozenset(optional)
    )


def table_files(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """``schema.table`` → (data files, bytes) of every table in the lake."""
    rows = con.execute(
        "SELECT s.schema_name || '.' || i.table_name, i.file_count, i.file_size_bytes "
        "FROM ducklake_table_info('lake') AS i JOIN __ducklake_metadata_lake.ducklake_schema AS s "
        "ON s.schema_id = i.schema_id AND s.end_snapshot IS NULL"
    ).fetchall()
    return {str(name): (int(files), int(size)) for name, files, size in rows}


def _data_files(con: duckdb.DuckDBPyConnection) -> int:
    return table_files(con).get("raw.events", (0, 0))[0]


def compact_over(con: duckdb.DuckDBPyConnection, files: int, *, largest: int | None = None) -> bool:
    """:func:`compact` ``raw.events`` when it holds more than ``files`` data files; whether it did."""
    if _data_files(con) <= files:
        return False
    compact(con, largest=largest)
    return True


def compact(con: duckdb.DuckDBPyConnection, *, largest: int | None = None) -> tuple[int, int]:
    """Merge small adjacent Parquet files of ``raw.events``; returns its data files before and after.

    ``largest``: files of this many bytes or more are left as they are. Without it, the one growing file of a
    month is rewritten with the new small ones at every merge: in a five-minute ``follow`` under 5,000
    appends/s each merge took from 0.25 s to 1.5 s, growing with the lake (measured).
    """
    before = _data_files(con)
    bound = "" if largest is None else f", max_file_size => {int(largest)}"

    def merge() -> None:
        # No write transaction of any process beside them (archive deletes from raw.events): warehouse.lake.
        with rewriting(con):
            con.execute("CALL ducklake_flush_inlined_data('lake', schema_name => 'raw', table_name => 'events')")
        with rewriting(con):
            con.execute(f"CALL ducklake_merge_adjacent_files('lake', 'events', schema => 'raw'{bound})")

    retry_conflicts(merge, "compacting raw.events")
    return before, _data_files(con)
