"""Lake maintenance: expire old DuckLake snapshots, delete the files no snapshot needs, merge small files.

DuckLake never deletes a data file by itself: every rebuild, compaction and drop leaves the files of
earlier snapshots behind for time travel. :func:`maintain` runs DuckLake's own functions in this order:

1. ``ducklake_merge_adjacent_files`` on every table (projections too): small files become few larger ones;
   the ``meta`` tables are tidied (:func:`tidy_table`): the row versions every ingest and advance
   superseded leave the catalog, which each read of them would otherwise copy;
2. ``ducklake_expire_snapshots`` of the snapshots superseded before the cut-off (``now - older_than``):
   a snapshot stops being the current one when the next commit lands, so one that was current less
   than ``older_than`` ago is kept, and every read that started on it can finish;
3. ``ducklake_cleanup_old_files``: the files only expired snapshots referenced;
4. ``ducklake_delete_orphaned_files`` for files under the data path the catalog does not know (a writer
   that died before its commit), older than the cut-off and at least :data:`ORPHAN_GRACE` old, so a
   commit in flight never loses its files.

Never expired, whatever ``older_than`` says (:func:`pinned`): the current snapshot (DuckLake's rule),
the snapshots a configured time-travel window needs (``PROJECTIONIST_TIME_TRAVEL_WINDOW``: the one
current at ``now - window`` and every later one), and every snapshot since the start of the oldest
rebuild still under way or interrupted (``meta.rebuilds``). Comparisons (``meta.comparisons``) record
their reports, not snapshot ids: they need no old snapshot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from eventstore.quoting import quote_literal
from warehouse.lake import retry_conflicts, rewriting

__all__ = ["ORPHAN_GRACE", "LakeSize", "Maintenance", "Pins", "lake_size", "maintain", "pinned", "tidy_table"]

#: Files the catalog does not know are deleted only when older than this (a commit in flight writes files first).
ORPHAN_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class LakeSize:
    """The lake's data on disk against what its current snapshot needs."""

    disk_bytes: int | None  # every file under the data path (None when the data path is object storage)
    live_bytes: int  # the data and delete files of the current snapshot
    files: int | None  # files under the data path

    @property
    def reclaimable_bytes(self) -> int | None:
        """What ``maintain --older-than 0s`` could free at most (before merging small files)."""
        return None if self.disk_bytes is None else max(0, self.disk_bytes - self.live_bytes)

    def as_json(self) -> dict[str, int | None]:
        """The sizes as JSON values."""
        return {
            "disk_bytes": self.disk_bytes,
            "live_bytes": self.live_bytes,
            "reclaimable_bytes": self.reclaimable_bytes,
            "files": self.files,
        }


def _data_path(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT value FROM ducklake_options('lake') WHERE option_name = 'data_path'").fetchone()
    return str(row[0]) if row and row[0] else ""


def lake_size(con: duckdb.DuckDBPyConnection) -> LakeSize:
    """Bytes on disk under the lake's data path and bytes the current snapshot references."""
    row = con.execute(
        "SELECT (SELECT coalesce(sum(file_size_bytes), 0) FROM __ducklake_metadata_lake.ducklake_data_file "
        "WHERE end_snapshot IS NULL) + (SELECT coalesce(sum(file_size_bytes), 0) FROM "
        "__ducklake_metadata_lake.ducklake_delete_file WHERE end_snapshot IS NULL)"
    ).fetchone()
    live = int(row[0]) if row else 0
    path = _data_path(con)
    if not path or "://" in path:
        return LakeSize(None, live, None)
    total = files = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += (Path(folder) / name).stat().st_size
            except FileNotFoundError:  # deleted while we walked
                continue
            files += 1
    return LakeSize(total, live, files)


@dataclass(frozen=True)
class Pins:
    """What must stay: the snapshots from ``keep_from`` on, and why."""

    keep_from: int | None  # the oldest snapshot id that must stay (None: only DuckLake's own rule applies)
    reasons: list[str] = field(default_factory=list)


def _snapshot_current_at(con: duckdb.DuckDBPyConnection, moment: datetime) -> int:
    """The snapshot that was current at ``moment`` (the first one, for a moment before the lake existed)."""
    row = con.execute(
        "SELECT coalesce(max(snapshot_id) FILTER (WHERE snapshot_time <= ?), min(snapshot_id)) "
        "FROM ducklake_snapshots('lake')",
        [moment],
    ).fetchone()
    assert row is not None and row[0] is not None  # a lake has at least its first snapshot
    return int(row[0])


def pinned(con: duckdb.DuckDBPyConnection, *, window: timedelta, now: datetime) -> Pins:
    """The snapshots a time-travel window of ``window`` and the unfinished rebuilds need."""
    keep: list[int] = []
    reasons = []
    if window > timedelta(0):
        found = _snapshot_current_at(con, now - window)
        keep.append(found)
        reasons.append(f"the time-travel window of {window} (PROJECTIONIST_TIME_TRAVEL_WINDOW) from snapshot {found}")
    has_rebuilds = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'meta' "
        "AND table_name = 'rebuilds'"
    ).fetchone()
    if has_rebuilds and has_rebuilds[0]:
        for name, version, started in con.execute(
            "SELECT name, version, started_at FROM meta.rebuilds ORDER BY started_at"
        ).fetchall():
            found = _snapshot_current_at(con, started)
            keep.append(found)
            reasons.append(f"the unfinished rebuild of {name} v{version} (started {started}) from snapshot {found}")
    return Pins(min(keep) if keep else None, reasons)


@dataclass(frozen=True)
class Maintenance:
    """What :func:`maintain` did (or, with ``dry_run``, would do)."""

    dry_run: bool
    cutoff: datetime  # snapshots superseded before this expire
    pins: Pins
    expired: list[int]  # snapshot ids
    files_deleted: int  # files of expired snapshots and orphaned files (would be, in a dry run)
    tables_merged: int  # tables whose small files were merged (0 in a dry run)
    before: LakeSize
    after: LakeSize

    def as_json(self) -> dict[str, object]:
        """The report as JSON values."""
        return {
            "dry_run": self.dry_run,
            "cutoff": self.cutoff.isoformat(),
            "kept_for": self.pins.reasons,
            "expired_snapshots": len(self.expired),
            "files_deleted": self.files_deleted,
            "tables_merged": self.tables_merged,
            "before": self.before.as_json(),
            "after": self.after.as_json(),
        }


def _expirable(con: duckdb.DuckDBPyConnection, cutoff: datetime, pins: Pins) -> list[int]:
    rows = con.execute(
        "SELECT snapshot_id FROM (SELECT snapshot_id, lead(snapshot_time) OVER (ORDER BY snapshot_id) AS superseded "
        "FROM ducklake_snapshots('lake')) WHERE superseded IS NOT NULL AND superseded < ? "
        "AND (?::BIGINT IS NULL OR snapshot_id < ?::BIGINT) ORDER BY snapshot_id",
        [cutoff, pins.keep_from, pins.keep_from],
    ).fetchall()
    return [int(r[0]) for r in rows]


def _tables(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = 'lake' ORDER BY ALL"
    ).fetchall()
    return [(str(s), str(t)) for s, t in rows]


def _call_count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()
    return int(row[0]) if row else 0


def maintain(
    con: duckdb.DuckDBPyConnection,
    *,
    older_than: timedelta,
    window: timedelta = timedelta(0),
    dry_run: bool = False,
    merge: bool = True,
    now: datetime | None = None,
) -> Maintenance:
    """Merge small files (unless not ``merge``), expire snapshots superseded more than ``older_than`` ago, delete
    the files no snapshot needs any more."""
    before = lake_size(con)
    merged = 0
    if merge and not dry_run:
        for schema, table in _tables(con):
            if schema == "meta":  # small tables updated by every ingest and advance: their superseded rows too
                tidy_table(con, schema, table)
                merged += 1
                continue

            def merge_table(schema: str = schema, table: str = table) -> None:
                target = f"{quote_literal(table)}, schema => {quote_literal(schema)}"
                with rewriting(con):  # no write transaction of any process beside it (warehouse.lake)
                    con.execute(f"CALL ducklake_merge_adjacent_files('lake', {target})")

            retry_conflicts(merge_table, f"merging the small files of {schema}.{table}")
            merged += 1
    # The cut-off from after the merges: the snapshots they superseded a moment ago count as superseded.
    now = now or datetime.now(UTC)
    cutoff = now - older_than
    pins = pinned(con, window=window, now=now)
    expired = _expirable(con, cutoff, pins)
    orphans_before = min(cutoff, now - ORPHAN_GRACE)
    if dry_run:
        scheduled = _call_count(
            con, "SELECT * FROM ducklake_cleanup_old_files('lake', dry_run => true, cleanup_all => true)"
        )
        orphans = _call_count(
            con,
            f"SELECT * FROM ducklake_delete_orphaned_files('lake', dry_run => true, older_than => "
            f"{quote_literal(orphans_before.isoformat())}::TIMESTAMPTZ)",
        )
        return Maintenance(True, cutoff, pins, expired, scheduled + orphans, 0, before, before)
    if expired:
        listed = ", ".join(str(v) for v in expired)
        retry_conflicts(
            lambda: con.execute(f"CALL ducklake_expire_snapshots('lake', versions => [{listed}]::UBIGINT[])"),
            "expiring old snapshots",
        )
    # Every file scheduled for deletion belongs to expired snapshots only, all superseded before the cut-off.
    deleted = _call_count(con, "SELECT * FROM ducklake_cleanup_old_files('lake', cleanup_all => true)")
    deleted += _call_count(
        con,
        f"SELECT * FROM ducklake_delete_orphaned_files('lake', older_than => "
        f"{quote_literal(orphans_before.isoformat())}::TIMESTAMPTZ)",
    )
    return Maintenance(False, cutoff, pins, expired, deleted, merged, before, lake_size(con))


def tidy_table(
    con: duckdb.DuckDBPyConnection,
    schema: str,
    table: str,
    delete_threshold: float = 0.0,
    *,
    largest: int | None = None,
) -> tuple[int, int]:
    """Keep a table a long-running writer changes every few seconds as cheap to read as when it was new.

    ``follow`` updates ``meta.checkpoints`` and ``meta.projection_versions`` and rewrites projection rows
    every cycle. DuckLake keeps each superseded row of a small change in its catalog (inlined, for time
    travel) and every read of the table copies them all: 100,000 of them add 90 ms to each read (measured
    on a PostgreSQL catalog), and neither expiring snapshots nor merging files removes them. A larger change
    writes a small file, and a replaced row a delete file. So, in this order and each in its own commit:
    the inlined rows are flushed to a file, files with deleted rows are rewritten without them, and small
    adjacent files are merged. Earlier snapshots keep their files for time travel until ``maintain``
    expires them. ``delete_threshold``: the share of a file's rows deleted above which it is rewritten (0:
    any; a large projection table may prefer to rewrite only files that lost much). ``largest``: files of this
    many bytes or more are not merged (a long-running writer keeps each merge's cost bounded; ``maintain``
    merges them). Returns the table's data and delete files after it.
    """
    named = f"{quote_literal(table)}, schema => {quote_literal(schema)}"
    steps = (
        f"CALL ducklake_flush_inlined_data('lake', schema_name => {quote_literal(schema)}, "
        f"table_name => {quote_literal(table)})",
        f"CALL ducklake_rewrite_data_files('lake', {named}, delete_threshold => {float(delete_threshold)})",
        f"CALL ducklake_merge_adjacent_files('lake', {named}"
        + ("" if largest is None else f", max_file_size => {int(largest)}")
        + ")",
    )
    files = deletes = 0
    for step, statement in enumerate(steps):
        if (step == 1 and not deletes) or (step == 2 and files < 2):
            continue

        def run(statement: str = statement) -> None:
            with rewriting(con):  # no write transaction of any process beside it (warehouse.lake)
                con.execute(statement)

        retry_conflicts(run, f"tidying {schema}.{table}")
        row = con.execute(
            "SELECT i.file_count, i.delete_file_count FROM ducklake_table_info('lake') AS i "
            "JOIN __ducklake_metadata_lake.ducklake_schema AS s "
            "ON s.schema_id = i.schema_id AND s.end_snapshot IS NULL WHERE s.schema_name = ? AND i.table_name = ?",
            [schema, table],
        ).fetchone()
        files, deletes = (int(row[0]), int(row[1])) if row else (0, 0)
    return files, deletes
