"""Projection change feeds: the rows of a live projection inserted, updated and deleted between two lake snapshots.

A consumer remembers the lake snapshot it has received up to. The changes since then compare the
live relation as it stood at that snapshot with the live relation now, both read with DuckLake's time
travel (``AT (VERSION => s)``), by key, on a content hash of the row:

- the same version, its table not replaced in between (an incremental ``project``): only the keys
  DuckLake's change data feed (``ducklake_table_changes``) names are compared. An incremental update
  deletes and re-inserts every touched key, so a key whose content came out the same emits nothing;
- another live version (a promotion or rollback) or the same version rebuilt (its table replaced):
  the whole of both tables, by key, like ``diff`` does. A rebuild with unchanged logic so emits
  nothing, and a promotion emits exactly the rows the new version changes: one consistent switch.

Only the columns the live view shows are read: a column that carries a private event field
(``Column(..., public=False)``) is never sent. The content hash covers the columns both sides have, except
``last_global_position`` (bookkeeping, sent
as the row's source position instead); a column a new version adds shows in the rows it sends but does
not by itself make a row change (as ``diff`` reports it: "added column"). Each change's idempotency key
hashes the consumer, the projection, the snapshot the change is read from (the consumer's cursor), the key
and the content hashes before and after: the same change gets the same key on every retry (the cursor
moves only once it is delivered) and a rebuild sends nothing, while a row that goes A→B, back to A and
to B again gets a new key for its second A→B (a receiver that drops repeated keys would miss it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.positions import START, Checkpoint
from eventstore.quoting import quote_literal
from projections import Registry
from projections.definition import LAST_GLOBAL_POSITION
from warehouse.lake import LAKE_ALIAS
from warehouse.versions.catalog import live_columns, version_table

__all__ = ["Change", "ChangeSet", "FeedError", "changes", "current_snapshot", "live_at"]


class FeedError(ConfigurationError):
    """Raised when a feed cannot be read or delivered as configured (unknown consumer, expired snapshot, bad target)."""


@dataclass(frozen=True)
class Change:
    """One row's change: ``op`` is insert, update or delete; JSON texts of its key and (not for a delete) its row."""

    op: str
    key: str  # JSON object of the key columns
    row: str | None  # JSON object of the new row (None for a delete)
    previous_hash: str | None  # content hash the consumer had (None for an insert)
    content_hash: str | None  # content hash now (None for a delete)
    last_global_position: int | None  # the row's last event (source position; None for a delete)
    idempotency_key: str


@dataclass(frozen=True)
class ChangeSet:
    """The changes of one projection's live relation from snapshot ``from_snapshot`` to ``to_snapshot``."""

    projection: str
    from_snapshot: int
    to_snapshot: int
    from_version: int | None  # live version at from_snapshot (None: nothing was live, or from the beginning)
    to_version: int | None  # live version at to_snapshot
    checkpoint: Checkpoint  # the live version's checkpoint at to_snapshot: what the changes correspond to
    whole: bool  # True when both tables were compared in full (a promotion, a rebuild, a first delivery)
    changes: list[Change]

    def counts(self) -> dict[str, int]:
        """How many inserts, updates and deletes."""
        found = {"insert": 0, "update": 0, "delete": 0}
        for change in self.changes:
            found[change.op] += 1
        return found


def current_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    """The lake's newest snapshot id."""
    row = con.execute(f"SELECT max(snapshot_id) FROM ducklake_snapshots('{LAKE_ALIAS}')").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def live_at(con: duckdb.DuckDBPyConnection, name: str, snapshot: int) -> tuple[int, Checkpoint] | None:
    """The live version of ``name`` and its checkpoint as the lake stood at ``snapshot``."""
    try:
        row = con.execute(
            f"SELECT version, transaction_id, global_position FROM meta.projection_versions AT (VERSION => {snapshot}) "
            "WHERE name = ? AND state = 'live'",
            [name],
        ).fetchone()
    except duckdb.CatalogException:  # no version table yet at that snapshot
        return None
    if row is None:
        return None
    return int(row[0]), Checkpoint(int(row[1] or 0), int(row[2] or 0))


def _table_id(con: duckdb.DuckDBPyConnection, table: str, snapshot: int) -> int | None:
    """DuckLake's id of ``projections.<table>`` at ``snapshot``: a rebuild's swap gives the version a new table."""
    meta = f"__ducklake_metadata_{LAKE_ALIAS}"
    row = con.execute(
        f"SELECT t.table_id FROM {meta}.ducklake_table AS t JOIN {meta}.ducklake_schema AS s USING (schema_id) "
        "WHERE s.schema_name = 'projections' AND t.table_name = ? AND t.begin_snapshot <= ? "
        "AND (t.end_snapshot IS NULL OR t.end_snapshot > ?)",
        [table, snapshot, snapshot],
    ).fetchone()
    return int(row[0]) if row else None


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> list[str]:
    description = con.execute(f"SELECT * FROM {relation} LIMIT 0").description or []
    return [str(d[0]) for d in description]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pack(columns: list[str]) -> str:
    return "struct_pack(" + ", ".join(f"{_ident(c)} := {_ident(c)}" for c in columns) + ")"


def _key_columns(registry: Registry, name: str, version: int) -> tuple[str, ...]:
    if version in registry.versions(name):
        return registry.get(name, version).key
    return registry.get(name).key  # a version no longer in the code: the projection's key is the same


def changes(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    from_snapshot: int,
    to_snapshot: int | None = None,
    *,
    consumer: str = "",
) -> ChangeSet:
    """The changes of ``analytics.<name>`` (its live version) from ``from_snapshot`` (0: the beginning) on.

    ``to_snapshot`` defaults to the lake's newest. Raises :class:`FeedError` when ``from_snapshot`` was
    expired by lake maintenance (the consumer must be reset).
    """
    to = current_snapshot(con) if to_snapshot is None else to_snapshot
    oldest = con.execute(f"SELECT min(snapshot_id) FROM ducklake_snapshots('{LAKE_ALIAS}')").fetchone()
    if from_snapshot and oldest and oldest[0] is not None and from_snapshot < int(oldest[0]):
        raise FeedError(
            f"the changes of {name} since lake snapshot {from_snapshot} cannot be computed: maintenance expired that "
            f"snapshot (the oldest kept is {oldest[0]}). Reset the consumer (`projectionist feed reset CONSUMER "
            "--beginning --yes`) to receive every row again."
        )
    old = live_at(con, name, from_snapshot) if from_snapshot else None
    new = live_at(con, name, to)
    checkpoint = new[1] if new else START
    empty = ChangeSet(name, from_snapshot, to, old[0] if old else None, new[0] if new else None, checkpoint, False, [])
    if to <= from_snapshot or (old is None and new is None):
        return empty
    key = _key_columns(registry, name, (new or old or (0, START))[0])
    new_rel = f"{version_table(name, new[0])} AT (VERSION => {to})" if new else None
    old_rel = f"{version_table(name, old[0])} AT (VERSION => {from_snapshot})" if old else None
    # Only what the live view shows: a column carrying a private event field (Column(public=False)) never leaves.
    public = {c for c, _ in live_columns(con, version_table(name, (new or old or (0, START))[0]))}
    new_cols = [c for c in _columns(con, new_rel) if c in public] if new_rel else []
    old_cols = [c for c in _columns(con, old_rel) if c in public] if old_rel else []
    shared = [c for c in (old_cols or new_cols) if c not in key and c != LAST_GLOBAL_POSITION]
    if old_rel and new_rel:
        shared = [c for c in shared if c in new_cols]
    touched = ""
    whole = True
    if old and new and old[0] == new[0]:
        table = f"{name}_v{new[0]}"
        if _table_id(con, table, from_snapshot) == _table_id(con, table, to):
            whole = False  # the same table, changed in place: DuckLake's change feed names the keys touched
            touched = (
                f"SELECT DISTINCT {', '.join(map(_ident, key))} FROM ducklake_table_changes("
                f"{quote_literal(LAKE_ALIAS)}, 'projections', {quote_literal(table)}, {from_snapshot + 1}, {to})"
            )
    keys = ", ".join(map(_ident, key))
    content = f"md5(CAST(to_json({_pack(shared)}) AS VARCHAR))" if shared else "md5('')"

    def side(relation: str | None, with_row: bool) -> str:
        row_cols = [c for c in new_cols if c != LAST_GLOBAL_POSITION]
        extra = (
            f", CAST(to_json({_pack(row_cols)}) AS VARCHAR) AS row, {_ident(LAST_GLOBAL_POSITION)} AS lgp"
            if with_row
            else ""
        )
        if relation is None:
            nulls = ", NULL::VARCHAR AS row, NULL::BIGINT AS lgp" if with_row else ""
            return f"SELECT {keys}, NULL::VARCHAR AS h{nulls} FROM {old_rel or new_rel} WHERE false"
        scope = f" SEMI JOIN touched USING ({keys})" if touched else ""
        return f"SELECT {keys}, {content} AS h{extra} FROM {relation}{scope}"

    with_touched = f"touched AS ({touched}), " if touched else ""
    sql = (
        f"WITH {with_touched}old AS ({side(old_rel, False)}), new AS ({side(new_rel, True)}) "
        f"SELECT CASE WHEN o.h IS NULL THEN 'insert' WHEN n.h IS NULL THEN 'delete' ELSE 'update' END AS op, "
        f"CAST(to_json({_pack(list(key))}) AS VARCHAR) AS key_json, n.row, o.h, n.h, n.lgp "
        f"FROM old AS o FULL OUTER JOIN new AS n USING ({keys}) WHERE o.h IS DISTINCT FROM n.h ORDER BY {keys}"
    )
    rows = con.execute(sql).fetchall()
    prefix = f"{consumer}\x1f{name}\x1f{from_snapshot}\x1f"
    found = [
        Change(
            str(op),
            str(key_json),
            None if row is None else str(row),
            None if before is None else str(before),
            None if after is None else str(after),
            None if lgp is None else int(lgp),
            hashlib.sha256(f"{prefix}{key_json}\x1f{before or ''}\x1f{after or ''}".encode()).hexdigest()[:32],
        )
        for op, key_json, row, before, after, lgp in rows
    ]
    return ChangeSet(name, from_snapshot, to, empty.from_version, empty.to_version, checkpoint, whole, found)
