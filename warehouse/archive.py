"""Archiving: finished streams move to the lake's cold tier, then, verified, out of the store's hot rows.

**The lake's cold tier** (:func:`archive_lake`, ``projectionist archive``). A stream is *finished* when
its last event (in stream order) is a closing type of its stream type (:func:`closing_event_types`),
and *old* when that last event was recorded before the cut-off. Its events move from ``raw.events``
to ``archive.events`` (same columns) in one lake transaction that also checks, per stream, the count
and a checksum (the sum of ``hash(global_position, event_id, data)``) of the stream's events before
the move (both tiers) against the cold tier after it, and the hot tier empty of the stream, before
it commits. ``raw.all_events`` is both tiers (:mod:`warehouse.lake`), so projections, rebuilds, diff
trails and analysts read exactly the same events before and after. The ingest only ever appends
after its checkpoint, which archiving does not move: nothing is read twice or lost.

**In the store** (:func:`archive_in_store`, ``projectionist archive --in-store``): only streams the
lake's cold tier holds, verified again against ``archive.events`` (count and a fingerprint of
``event_id@global_position`` that PostgreSQL computes alike), each kind by its own mechanism through
its adapter (``archive_streams``: Marten's and Emmett's ``is_archived``, the native table's
``<table>_archive`` or a delete, none for ``eventsourcing``). The store changes in one REPEATABLE
READ transaction that checks the store's rows against the lake's fingerprint and archives exactly
those rows; the lake records it afterwards (``meta.archived_streams.store_archived_at``). A crash
between the two leaves the store done and the record open: the next run finds the stream already
archived and records it.

Bookkeeping: ``meta.archive_runs`` (one row per run and tier) and ``meta.archived_streams`` (one row
per stream and lake run, with the fingerprints the store step checks).

The DuckLake pinned here (format 1.0, DuckDB 1.5.5) has one data path per lake: ``set_option``
refuses ``data_path`` per schema or table and no SQL sets ``ducklake_schema.path``. So the cold
tier is Parquet under ``<data path>/archive/events/``, a folder of its own, not another storage
location yet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import psycopg

from eventstore.adapters import EventStoreAdapter, StoreArchive, StreamFingerprint
from eventstore.connection import connect
from eventstore.errors import ConfigurationError, TerminalError
from eventstore.quoting import quote_literal
from eventstore.settings import parse_closing_events
from eventstore.settings import parse_duration as settings_duration
from projections import discover
from warehouse.lake import LAKE_ALIAS, columns_ddl, comment_column, retry_conflicts, transaction
from warehouse.stream_health import closing_event_types as declared_closing_types

__all__ = [
    "ARCHIVED_STREAMS",
    "ARCHIVE_RUNS",
    "CLOSING_ENV",
    "ArchiveRun",
    "ArchiveVerificationError",
    "StoreArchiveRun",
    "archive_in_store",
    "archive_lake",
    "closing_event_types",
    "parse_duration",
    "verified_streams",
]

#: ``stream_type:Type1,Type2;other:Type3`` (``*`` as stream type: any); overrides the projection set's.
CLOSING_ENV = "PROJECTIONIST_CLOSING_EVENT_TYPES"
ARCHIVE_RUNS = "meta.archive_runs"
ARCHIVED_STREAMS = "meta.archived_streams"

_RUN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("run_id", "VARCHAR", "The run (a UUID)."),
    ("tier", "VARCHAR", "'lake' (raw.events → archive.events) or 'store' (archived in the event store)."),
    ("older_than", "VARCHAR", "The --older-than given (lake runs)."),
    ("cutoff", "TIMESTAMPTZ", "Streams whose last event was recorded before this were archived (lake runs)."),
    ("streams", "BIGINT", "Streams archived by the run."),
    ("events", "BIGINT", "Events moved (lake) or changed in the store (store)."),
    ("checksum", "DECIMAL(38,0)", "Sum of the archived streams' checksums (lake runs)."),
    ("action", "VARCHAR", "What the store did: is_archived, moved to <table>_archive, deleted (store runs)."),
    ("archived_at", "TIMESTAMPTZ", "When the run committed."),
)
_STREAM_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("run_id", "VARCHAR", "The lake run that moved the stream (meta.archive_runs.run_id)."),
    ("stream_id", "VARCHAR", "The stream."),
    ("stream_type", "VARCHAR", "Its stream type."),
    ("events", "BIGINT", "Its events in the lake (both tiers) when archived, all in archive.events since."),
    ("checksum", "DECIMAL(38,0)", "sum(hash(global_position, event_id, data)) over those events."),
    (
        "store_checksum",
        "DECIMAL(38,0)",
        "Sum of 60 bits of md5(event_id@global_position): what archive --in-store checks the store's rows against.",
    ),
    ("last_recorded_at", "TIMESTAMPTZ", "When its last event was recorded."),
    ("store_archived_at", "TIMESTAMPTZ", "When archive --in-store archived it in the store (NULL: not yet)."),
)

_CHECKSUM = "sum(hash(global_position, event_id, data)::HUGEINT)::DECIMAL(38,0)"
# The DuckDB twin of eventstore.adapters.event_fingerprint_sql (60 bits of md5 as BIGINT).
_STORE_CHECKSUM = (
    "coalesce(sum(('0x' || md5(event_id || '@' || global_position::VARCHAR)[1:15])::BIGINT), 0)::DECIMAL(38,0)"
)


class ArchiveVerificationError(TerminalError):
    """Raised when the cold tier does not hold exactly what the hot tier held; nothing was changed."""


# -- configuration ---------------------------------------------------------------------------------


def closing_event_types(env: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """The event types that finish a stream, per stream type (``*``: any stream type).

    ``PROJECTIONIST_CLOSING_EVENT_TYPES`` (``cart:CartConfirmed,CartCancelled;order:OrderShipped``) when set,
    else what the projection modules declare (``CLOSING_EVENT_TYPES``; the demo shop's carts end with
    CartConfirmed or CartCancelled). The one definition is :func:`warehouse.stream_health.closing_event_types`,
    which ``projectionist streams`` uses too.
    """
    env = os.environ if env is None else env
    spec = (env.get(CLOSING_ENV) or "").strip()
    if spec:
        return {stream_type: tuple(types) for stream_type, types in parse_closing_events(spec)}
    return {stream_type: tuple(sorted(types)) for stream_type, types in declared_closing_types(discover()).items()}


def parse_duration(text: str, what: str = "--older-than") -> timedelta:
    """``30d``, ``12h``, ``45m``, ``0s``, ``2w`` → a timedelta (:func:`eventstore.settings.parse_duration`)."""
    return settings_duration(text, what)


def _closing_predicate(closing: Mapping[str, tuple[str, ...]]) -> str:
    """SQL over ``stream_type`` and ``last_type``: the stream's last event closes it."""
    if not closing:
        raise ConfigurationError(f"no closing event types are configured: set {CLOSING_ENV}.")
    terms = []
    for stream_type, types in sorted(closing.items()):
        listed = ", ".join(quote_literal(t) for t in types)
        kind = "true" if stream_type == "*" else f"stream_type = {quote_literal(stream_type)}"
        terms.append(f"({kind} AND last_type IN ({listed}))")
    return " OR ".join(terms)


# -- the lake's cold tier --------------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveRun:
    """One run of :func:`archive_lake` (``dry_run``: what it would move; ``run_id`` None then)."""

    run_id: str | None
    older_than: str
    cutoff: datetime
    streams: int
    events: int
    checksum: int
    dry_run: bool = False
    closing: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The run as JSON-ready values."""
        return {
            "tier": "lake",
            "run_id": self.run_id,
            "older_than": self.older_than,
            "cutoff": self.cutoff.isoformat(),
            "streams": self.streams,
            "events": self.events,
            "checksum": str(self.checksum),
            "dry_run": self.dry_run,
            "closing_event_types": {k: list(v) for k, v in self.closing.items()},
        }


def _candidates_sql(closing: Mapping[str, tuple[str, ...]]) -> str:
    """Streams with hot rows, finished and last recorded before ``?`` (the cut-off), with their checksums."""
    return (
        "WITH per_stream AS (SELECT stream_id, "
        "last(stream_type ORDER BY stream_version, transaction_id, global_position) AS stream_type, "
        "last(event_type ORDER BY stream_version, transaction_id, global_position) AS last_type, "
        f"max(recorded_at) AS last_recorded_at, count(*) AS events, {_CHECKSUM} AS checksum, "
        f"{_STORE_CHECKSUM} AS store_checksum "
        "FROM raw.all_events WHERE stream_id IN (SELECT stream_id FROM raw.events) GROUP BY stream_id) "
        "SELECT stream_id, stream_type, events, checksum, store_checksum, last_recorded_at FROM per_stream "
        f"WHERE last_recorded_at < ? AND ({_closing_predicate(closing)})"
    )


def _ensure_meta(con: duckdb.DuckDBPyConnection) -> None:
    """Create the archive's meta tables if missing (inside the caller's transaction)."""
    existing = {
        str(r[0])
        for r in con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = ?", [LAKE_ALIAS]
        ).fetchall()
    }
    tables = (
        (ARCHIVE_RUNS, _RUN_COLUMNS, "One row per archive run and tier (lake or store)."),
        (ARCHIVED_STREAMS, _STREAM_COLUMNS, "Every stream moved to archive.events, with the checks archiving made."),
    )
    for table, columns, comment in tables:
        if table in existing:
            continue
        con.execute(f"CREATE TABLE {table} ({columns_ddl(columns)})")
        con.execute(f"COMMENT ON TABLE {table} IS {quote_literal(comment)}")
        for name, _, column_comment in columns:
            con.execute(comment_column(table, f'"{name}"', column_comment))


def _mismatches(con: duckdb.DuckDBPyConnection, run_id: str, relation: str) -> list[str]:
    """Streams of the run whose events in ``relation`` differ (count or checksum) from what was recorded."""
    rows = con.execute(
        f"SELECT s.stream_id, s.events, coalesce(t.events, 0) FROM {ARCHIVED_STREAMS} AS s "
        f"LEFT JOIN (SELECT stream_id, count(*) AS events, {_CHECKSUM} AS checksum FROM {relation} "
        f"WHERE stream_id IN (SELECT stream_id FROM {ARCHIVED_STREAMS} WHERE run_id = ?) GROUP BY stream_id) AS t "
        "USING (stream_id) WHERE s.run_id = ? AND (t.events IS DISTINCT FROM s.events "
        "OR t.checksum IS DISTINCT FROM s.checksum) ORDER BY s.stream_id LIMIT 5",
        [run_id, run_id],
    ).fetchall()
    return [f"{r[0]} ({r[1]} events recorded, {r[2]} found)" for r in rows]


def archive_lake(
    con: duckdb.DuckDBPyConnection,
    older_than: str = "30d",
    *,
    closing: Mapping[str, tuple[str, ...]] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    before_commit: Callable[[], None] | None = None,
) -> ArchiveRun:
    """Move the events of finished streams last recorded before ``now - older_than`` to ``archive.events``.

    One lake transaction: the candidates' count and checksum are recorded, the rows copied to the cold
    tier and checked there per stream, the hot rows deleted and both tiers checked again, the run
    recorded; any mismatch raises :class:`ArchiveVerificationError` and nothing changes. Nothing to
    move commits nothing. ``dry_run`` only counts (a read-only connection is enough).
    ``before_commit`` runs just before the COMMIT (for crash tests).
    """
    closing = dict(closing_event_types() if closing is None else closing)
    cutoff = (now or datetime.now(UTC)) - parse_duration(older_than)
    candidates = _candidates_sql(closing)
    if dry_run:
        row = con.execute(
            f"SELECT count(*), coalesce(sum(events), 0), coalesce(sum(checksum), 0) FROM ({candidates})", [cutoff]
        ).fetchone()
        assert row is not None
        return ArchiveRun(None, older_than, cutoff, int(row[0]), int(row[1]), int(row[2]), True, closing)

    def run() -> ArchiveRun:
        run_id = str(uuid.uuid4())
        with transaction(con) as tx:
            _ensure_meta(con)
            con.execute(
                f"INSERT INTO {ARCHIVED_STREAMS} SELECT ?, stream_id, stream_type, events, checksum, store_checksum, "
                f"last_recorded_at, NULL FROM ({candidates})",
                [run_id, cutoff],
            )
            row = con.execute(
                f"SELECT count(*), coalesce(sum(events), 0), coalesce(sum(checksum), 0) FROM {ARCHIVED_STREAMS} "
                "WHERE run_id = ?",
                [run_id],
            ).fetchone()
            assert row is not None
            streams, events, checksum = int(row[0]), int(row[1]), int(row[2])
            if streams == 0:
                tx.abandon()
                return ArchiveRun(None, older_than, cutoff, 0, 0, 0, False, closing)
            chosen = f"stream_id IN (SELECT stream_id FROM {ARCHIVED_STREAMS} WHERE run_id = {quote_literal(run_id)})"
            con.execute(f"INSERT INTO archive.events SELECT * FROM raw.events WHERE {chosen}")
            wrong = _mismatches(con, run_id, "archive.events")
            if wrong:
                raise ArchiveVerificationError(
                    f"the cold tier does not hold what the lake held for {', '.join(wrong)}; nothing was archived."
                )
            con.execute(f"DELETE FROM raw.events WHERE {chosen}")
            left = con.execute(f"SELECT count(*) FROM raw.events WHERE {chosen}").fetchone()
            wrong = _mismatches(con, run_id, "raw.all_events")
            if (left and left[0]) or wrong:
                raise ArchiveVerificationError(
                    f"after the move raw.all_events differs for {', '.join(wrong) or 'some streams'}; "
                    "nothing was archived."
                )
            con.execute(
                f"INSERT INTO {ARCHIVE_RUNS} VALUES (?, 'lake', ?, ?, ?, ?, ?, NULL, get_current_timestamp())",
                [run_id, older_than, cutoff, streams, events, checksum],
            )
            con.execute(
                "CALL ducklake_set_commit_message('lake', 'projectionist', ?)",
                [f"archive {streams} streams ({events} events) older than {older_than} to archive.events"],
            )
            if before_commit is not None:
                before_commit()
        return ArchiveRun(run_id, older_than, cutoff, streams, events, checksum, False, closing)

    return retry_conflicts(run, "archiving finished streams")


# -- in the store ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreArchiveRun:
    """One run of :func:`archive_in_store`: streams done, events changed in the store, streams skipped."""

    run_id: str | None
    kind: str
    action: str
    streams: tuple[str, ...]
    events: int
    skipped: dict[str, str]
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The run as JSON-ready values."""
        return {
            "tier": "store",
            "run_id": self.run_id,
            "kind": self.kind,
            "action": self.action,
            "streams": len(self.streams),
            "stream_ids": list(self.streams),
            "events": self.events,
            "skipped": self.skipped,
            "dry_run": self.dry_run,
        }


def verified_streams(con: duckdb.DuckDBPyConnection) -> tuple[dict[str, StreamFingerprint], dict[str, str]]:
    """Streams the cold tier holds and the store has not archived yet, each checked against its record.

    A stream counts by its latest lake run (a reopened stream archived again has a newer record over
    all its events). One with hot rows again, or whose cold rows differ from the record, is skipped.
    """
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'meta' "
        "AND table_name = 'archived_streams'",
        [LAKE_ALIAS],
    ).fetchone()
    if not exists or not exists[0]:
        return {}, {}
    rows = con.execute(
        "WITH latest AS (SELECT stream_id, arg_max_null(events, archived) AS events, "
        "arg_max_null(store_checksum, archived) AS store_checksum, arg_max_null(store_archived_at, archived) AS done "
        f"FROM (SELECT s.*, r.archived_at AS archived FROM {ARCHIVED_STREAMS} AS s JOIN {ARCHIVE_RUNS} AS r "
        "USING (run_id)) GROUP BY stream_id), "
        f"cold AS (SELECT stream_id, count(*) AS events, {_STORE_CHECKSUM} AS store_checksum FROM archive.events "
        "WHERE stream_id IN (SELECT stream_id FROM latest WHERE done IS NULL) GROUP BY stream_id) "
        "SELECT l.stream_id, l.events, l.store_checksum::VARCHAR, coalesce(c.events, 0), c.store_checksum::VARCHAR, "
        "l.stream_id IN (SELECT stream_id FROM raw.events) FROM latest AS l LEFT JOIN cold AS c USING (stream_id) "
        "WHERE l.done IS NULL ORDER BY l.stream_id"
    ).fetchall()
    verified: dict[str, StreamFingerprint] = {}
    skipped: dict[str, str] = {}
    for stream_id, events, checksum, cold_events, cold_checksum, hot in rows:
        if hot:
            skipped[str(stream_id)] = "it has new events in raw.events: archive it in the lake again first"
        elif (int(events), str(checksum)) != (int(cold_events), str(cold_checksum)):
            skipped[str(stream_id)] = (
                f"archive.events holds {cold_events} of its {events} recorded events or other ones: not verified"
            )
        else:
            verified[str(stream_id)] = StreamFingerprint(int(events), int(checksum))
    return verified, skipped


def _action(adapter: EventStoreAdapter, delete: bool) -> str:
    if adapter.kind != "native":
        return "is_archived"
    return "deleted" if delete else f"moved to {adapter.table}_archive"


def archive_in_store(
    con: duckdb.DuckDBPyConnection,
    adapter: EventStoreAdapter,
    *,
    delete: bool = False,
    dry_run: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> StoreArchiveRun:
    """Archive in the store the streams the lake's cold tier verifiably holds (see the module docstring).

    ``dry_run`` runs the store's check only and lists what would change. ``before_commit`` runs inside
    the store transaction just before it commits (crash tests).
    """
    verified, skipped = verified_streams(con)
    action = _action(adapter, delete)
    if not verified:
        return StoreArchiveRun(None, adapter.kind, action, (), 0, skipped, dry_run)
    with connect(adapter.dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        result: StoreArchive = adapter.archive_streams(conn, verified, delete=delete, dry_run=dry_run)
        if dry_run:
            conn.rollback()
        else:
            if before_commit is not None:
                before_commit()
            conn.commit()
    skipped = {**skipped, **result.skipped}
    if dry_run or not result.archived:
        return StoreArchiveRun(None, adapter.kind, action, result.archived, result.events, skipped, dry_run)
    run_id = str(uuid.uuid4())

    def record() -> None:
        with transaction(con):
            _ensure_meta(con)
            listed = ", ".join(quote_literal(s) for s in result.archived)
            con.execute(
                f"UPDATE {ARCHIVED_STREAMS} SET store_archived_at = get_current_timestamp() "
                f"WHERE store_archived_at IS NULL AND stream_id IN ({listed})"
            )
            con.execute(
                f"INSERT INTO {ARCHIVE_RUNS} VALUES (?, 'store', NULL, NULL, ?, ?, NULL, ?, get_current_timestamp())",
                [run_id, len(result.archived), result.events, action],
            )

    retry_conflicts(record, "recording the store's archive")
    return StoreArchiveRun(run_id, adapter.kind, action, result.archived, result.events, skipped)
