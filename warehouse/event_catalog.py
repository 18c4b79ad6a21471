"""The event catalog: which event types and versions the lake holds, their payload fields, and what is off.

``analytics.event_catalog`` has one row per ``(stream_type, event_type, event_version)``: how many
events, first and last seen (``recorded_at``), and ``fields``, the top-level payload fields found, each
with its JSON type (``string``, ``number``, ``boolean``, ``object``, ``array``, ``null``), how many
events hold it with that type and their share (``presence``), first and last seen. A field found with
two JSON types appears twice.

The catalog is kept incrementally: :func:`refresh_event_catalog` reads only the events ingested since
its own checkpoint (consumer ``event_catalog`` in ``meta.checkpoints``) and appends their aggregates
to ``meta.event_catalog_types`` and ``meta.event_catalog_fields`` with the moved checkpoint, in one
lake commit; the view sums those parts. ``follow`` does the same inside each ingest commit
(:func:`add_new_events`), so keeping the catalog costs it no commit of its own. A view parsing every
event's payload would re-read the whole lake on each query (docs/governance.md has the measurement).

:func:`catalog_entries` reads it back and adds what needs the projections' registry: a type or version
no projection or upcaster consumes (``unhandled``), a field whose JSON type changed between versions
or within one (``type_changed``), and a version with an upcaster that no event was written in since
a date (``upcaster_idle``). :func:`schema_changes` lists what appeared since a date.

Each entry is keyed by ``(event_type, event_version)`` (and the stream type): the key a later per-version
declaration (public fields, say) attaches to.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from eventstore.positions import START, Checkpoint, in_range
from eventstore.quoting import quote_literal
from projections import Registry
from warehouse.lake import retry_conflicts, set_view_column_comments, transaction

if TYPE_CHECKING:
    from warehouse.ingest import LandedBatch

__all__ = [
    "CATALOG_CONSUMER",
    "CatalogAddition",
    "CatalogEntry",
    "FieldStats",
    "SchemaChange",
    "add_new_events",
    "catalog_batch",
    "catalog_entries",
    "ensure_event_catalog",
    "handled_versions",
    "refresh_event_catalog",
    "schema_changes",
    "unhandled_entries",
]

#: The catalog's row in meta.checkpoints.
CATALOG_CONSUMER = "event_catalog"
_INGEST_CONSUMER = "ingest"  # warehouse.ingest.INGEST_CONSUMER (not imported: ingest's callers refresh the catalog)

_TYPES_COLUMNS = (
    ("stream_type", "VARCHAR", "The kind of stream, e.g. cart."),
    ("event_type", "VARCHAR", "The event's type name."),
    ("event_version", "INTEGER", "Schema version of the event type, as stored."),
    ("events", "BIGINT", "Events of this type and version in the range this part covers."),
    ("first_seen", "TIMESTAMPTZ", "Earliest recorded_at in the part."),
    ("last_seen", "TIMESTAMPTZ", "Latest recorded_at in the part."),
)
_FIELDS_COLUMNS = (
    *_TYPES_COLUMNS[:3],
    ("field", "VARCHAR", "A top-level payload field."),
    ("json_type", "VARCHAR", "Its JSON type: string, number, boolean, object, array or null."),
    *_TYPES_COLUMNS[3:],
)
_VIEW_COLUMNS = [
    ("stream_type", "The kind of stream, e.g. cart."),
    ("event_type", "The event's type name."),
    ("event_version", "Schema version of the event type, as stored."),
    ("events", "How many events of this type and version the lake holds."),
    ("first_seen", "Earliest recorded_at of these events."),
    ("last_seen", "Latest recorded_at of these events."),
    ("fields", "Top-level payload fields: name, JSON type, events holding it, presence (share), first/last seen."),
]
_VIEW_COMMENT = (
    "Per stream type, event type and version: count, first/last seen and the payload fields with their JSON "
    "types and presence. Kept incrementally at ingest (meta.event_catalog_*); `projectionist events` adds flags."
)

# DuckDB's json_type names → JSON's own types (an integer and a fraction are both a JSON number).
_JSON_TYPE = (
    "CASE j.type WHEN 'VARCHAR' THEN 'string' WHEN 'BOOLEAN' THEN 'boolean' WHEN 'OBJECT' THEN 'object' "
    "WHEN 'ARRAY' THEN 'array' WHEN 'NULL' THEN 'null' ELSE 'number' END"
)

_VIEW_SQL = """
WITH t AS (
    SELECT stream_type, event_type, event_version, sum(events)::BIGINT AS events,
        min(first_seen) AS first_seen, max(last_seen) AS last_seen
    FROM meta.event_catalog_types GROUP BY ALL
), f AS (
    SELECT stream_type, event_type, event_version, field, json_type, sum(events)::BIGINT AS events,
        min(first_seen) AS first_seen, max(last_seen) AS last_seen
    FROM meta.event_catalog_fields GROUP BY ALL
)
SELECT t.stream_type, t.event_type, t.event_version, t.events, t.first_seen, t.last_seen,
    coalesce(
        list({'field': f.field, 'json_type': f.json_type, 'events': f.events,
              'presence': round(f.events / t.events, 4), 'first_seen': f.first_seen, 'last_seen': f.last_seen}
             ORDER BY f.field, f.json_type) FILTER (WHERE f.field IS NOT NULL),
        []
    ) AS fields
FROM t LEFT JOIN f ON f.stream_type IS NOT DISTINCT FROM t.stream_type AND f.event_type = t.event_type
    AND f.event_version IS NOT DISTINCT FROM t.event_version
GROUP BY ALL
"""


def _checkpoint(con: duckdb.DuckDBPyConnection, consumer: str) -> Checkpoint | None:
    row = con.execute(
        "SELECT transaction_id, global_position FROM meta.checkpoints WHERE consumer = ?", [consumer]
    ).fetchone()
    return None if row is None else Checkpoint(int(row[0]), int(row[1]))


def _ensure(con: duckdb.DuckDBPyConnection) -> None:
    """The catalog's tables, view and checkpoint row (once per lake)."""
    present = {
        str(r[0])
        for r in con.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE database_name = 'lake' "
            "UNION ALL SELECT schema_name || '.' || view_name FROM duckdb_views() WHERE database_name = 'lake'"
        ).fetchall()
    }
    if {"meta.event_catalog_types", "meta.event_catalog_fields", "analytics.event_catalog"} <= present:
        return

    def create() -> None:
        with transaction(con):
            for table, columns in (("types", _TYPES_COLUMNS), ("fields", _FIELDS_COLUMNS)):
                ddl = ", ".join(f"{n} {t}" for n, t, _ in columns)
                con.execute(f"CREATE TABLE IF NOT EXISTS meta.event_catalog_{table} ({ddl})")
                for name, _, comment in columns:
                    con.execute(f"COMMENT ON COLUMN meta.event_catalog_{table}.{name} IS {quote_literal(comment)}")
            con.execute(f"CREATE OR REPLACE VIEW analytics.event_catalog AS {_VIEW_SQL}")
            con.execute(f"COMMENT ON VIEW analytics.event_catalog IS {quote_literal(_VIEW_COMMENT)}")
            set_view_column_comments(con, "analytics", "event_catalog", _VIEW_COLUMNS)
            if _checkpoint(con, CATALOG_CONSUMER) is None:
                con.execute(
                    "INSERT INTO meta.checkpoints VALUES (?, 'raw.all_events', ?, ?, 0, 0, get_current_timestamp())",
                    [CATALOG_CONSUMER, START.transaction_id, START.global_position],
                )

    retry_conflicts(create, "creating the event catalog")


def ensure_event_catalog(con: duckdb.DuckDBPyConnection) -> None:
    """Create the catalog's tables, view and checkpoint row if missing (DDL: call it outside other transactions)."""
    _ensure(con)


@dataclass(frozen=True)
class CatalogAddition:
    """What :func:`add_new_events` added: how many events, and their ``(event_type, event_version)`` pairs."""

    events: int
    versions: list[tuple[str, int]]


def add_new_events(con: duckdb.DuckDBPyConnection, *, batch: LandedBatch | None = None) -> CatalogAddition | None:
    """Inside the caller's open lake transaction: add the events past the catalog's checkpoint up to the ingest's.

    None when the catalog was already up to date (then nothing is written). An ingest calls it in its own
    batch transaction (``warehouse.ingest.ingest(in_commit=…)``, ``batch``: the batch it has just written),
    so the catalog costs no lake commit of its own and reads only that batch: from its staged table when it
    has one, else from ``raw.events`` (this transaction wrote them: no archive can have moved them) rather
    than ``raw.all_events`` (the empty cold tier's part of a statement costs 30-60 ms on a PostgreSQL
    catalog). Both checkpoints then come from the batch, not from a read of ``meta.checkpoints``, and the
    catalog's moves in the ingest's own statement (:meth:`~warehouse.ingest.LandedBatch.move`).
    """
    if batch is not None:
        after, until = batch.checkpoints.get(CATALOG_CONSUMER, START), batch.until
    else:
        points = dict(
            con.execute(
                "SELECT consumer, [transaction_id, global_position] FROM meta.checkpoints WHERE consumer IN (?, ?)",
                [CATALOG_CONSUMER, _INGEST_CONSUMER],
            ).fetchall()
        )
        after = Checkpoint(*points[CATALOG_CONSUMER]) if points.get(CATALOG_CONSUMER) else START
        until = Checkpoint(*points[_INGEST_CONSUMER]) if points.get(_INGEST_CONSUMER) else START
    if until == after:
        return None
    if batch is not None and after >= batch.after:  # caught up: every new event is in this batch
        relation = f"temp.main.{batch.table}" if batch.table is not None else "raw.events"
    else:
        relation = "raw.all_events"
    new = f"SELECT * FROM {relation} WHERE {in_range(after, until)}"
    name = f"_event_catalog_{uuid.uuid4().hex[:12]}"
    copied, types_part = relation == "raw.all_events", f"temp.main.{name}_types"
    if copied:
        # A catalog behind reads both tiers, and each read of raw.all_events costs 40-70 ms of catalog round
        # trips: one scan into a temporary table (in DuckDB's own memory), then both aggregates over it.
        con.execute(
            f"CREATE TEMP TABLE {name} AS "
            f"SELECT stream_type, event_type, event_version, recorded_at, data FROM ({new}) AS n"
        )
        events = f"temp.main.{name}"
    else:
        # The batch just written (or staged): read twice rather than copied once (a 1.2 M-event batch's copy
        # took 0.2-0.3 s of the catalog's 0.55-0.75 s; two reads of its files cost 0.03 s more than one).
        events = f"({new})"
    try:
        # Aggregated first (a handful of rows per type and version), then appended: the count of new
        # events and the versions seen come from the aggregate.
        con.execute(
            f"CREATE TEMP TABLE {name}_types AS SELECT stream_type, event_type, event_version, count(*) AS events, "
            f"min(recorded_at), max(recorded_at) FROM {events} AS e GROUP BY ALL"
        )
        con.execute(f"INSERT INTO meta.event_catalog_types SELECT * FROM {types_part}")
        types = con.execute(f"SELECT event_type, event_version, events FROM {types_part}").fetchall()
        # One parse per payload: json_each lists a document's members with their types. Its rows for an
        # array's elements ($[0], …) and for a scalar (no key) are not fields, so only "$." members count.
        con.execute(
            "INSERT INTO meta.event_catalog_fields "
            f"SELECT e.stream_type, e.event_type, e.event_version, j.key, {_JSON_TYPE} AS json_type, count(*), "
            "min(e.recorded_at), max(e.recorded_at) "
            f"FROM {events} AS e, json_each(e.data) AS j WHERE starts_with(j.fullkey, '$.') GROUP BY ALL"
        )
    finally:
        if copied:
            con.execute(f"DROP TABLE IF EXISTS temp.main.{name}")
        con.execute(f"DROP TABLE IF EXISTS {types_part}")
    added = sum(int(row[2]) for row in types)
    if batch is not None:
        batch.move(CATALOG_CONSUMER, until, added)  # in the ingest's statement that moves the batch's checkpoint
    else:
        con.execute(
            "UPDATE meta.checkpoints SET transaction_id = ?, global_position = ?, events = events + ?, "
            "batches = batches + 1, updated_at = get_current_timestamp() WHERE consumer = ?",
            [until.transaction_id, until.global_position, added, CATALOG_CONSUMER],
        )
    return CatalogAddition(added, sorted({(str(t), int(v)) for t, v, _ in types if v is not None}))


def catalog_batch(con: duckdb.DuckDBPyConnection, batch: LandedBatch) -> None:
    """``ingest(..., in_commit=catalog_batch)``: the catalog in each ingest batch's commit, reading the batch just
    written; a catalog behind (a lake older than it) catches up in the first batch."""
    add_new_events(con, batch=batch)


def refresh_event_catalog(con: duckdb.DuckDBPyConnection) -> int:
    """Add the events ingested since the catalog's checkpoint to it; returns how many (0: it was up to date)."""
    _ensure(con)
    added = 0

    def step() -> None:
        nonlocal added
        added = 0
        with transaction(con) as tx:
            addition = add_new_events(con)
            if addition is None:
                tx.abandon()
                return
            added = addition.events

    retry_conflicts(step, "refreshing the event catalog")
    return added


@dataclass(frozen=True)
class FieldStats:
    """One payload field of an event type and version, with one JSON type."""

    field: str
    json_type: str
    events: int
    presence: float  # share of the type and version's events holding it with this type
    first_seen: datetime
    last_seen: datetime
    private: bool = False  # declared private (projections.fields): left out of every analytics view


@dataclass(frozen=True)
class CatalogEntry:
    """One event type and version of one stream type, as the lake holds it, and its flags."""

    stream_type: str | None
    event_type: str
    event_version: int
    events: int
    first_seen: datetime
    last_seen: datetime
    fields: list[FieldStats]
    flags: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (timestamps as ISO 8601)."""
        loaded: dict[str, Any] = json.loads(json.dumps(asdict(self), default=lambda v: v.isoformat()))
        return loaded


def handled_versions(registry: Registry) -> dict[str, int]:
    """Per event type some projection consumes: the highest version it reads (via upcasters or declared).

    Versions 1 up to it are handled, as the engine's poison check has it (``projections.engine.run.known_versions``).
    """
    highest: dict[str, int] = {}
    for projection in registry:
        for event_type in projection.consumes:
            known = max(registry.upcasters.latest(event_type) or 1, projection.event_versions.get(event_type, 1))
            highest[event_type] = max(highest.get(event_type, 0), known)
    return highest


def _unhandled(entry: CatalogEntry, registry: Registry, handled: dict[str, int]) -> str | None:
    upcaster = registry.upcasters.get(entry.event_type, entry.event_version)
    highest = handled.get(entry.event_type)
    if highest is None:
        # An upcaster alone does not read an event: what it produces must reach a projection.
        return f"unhandled: no projection consumes {entry.event_type}" + (
            " (it has an upcaster, but nothing reads what it produces)" if upcaster is not None else ""
        )
    if not 1 <= entry.event_version <= highest:
        return (
            f"unhandled: no projection or upcaster reads {entry.event_type} v{entry.event_version} "
            f"(they read v1..v{highest}): add an upcaster or declare the version in the projection"
        )
    return None


def _undeclared(entry: CatalogEntry, registry: Registry) -> str | None:
    """A flag for a type or version without a public-fields declaration, once the domain declares any."""
    policy = registry.fields
    if not len(policy) or policy.declaration(entry.event_type, entry.event_version) is not None:
        return None
    if not policy.declares(entry.event_type):
        return (
            f"fields_undeclared: {entry.event_type} has no PUBLIC_FIELDS declaration, so analysts see all its "
            "fields; declare which are public"
        )
    return (
        f"fields_undeclared: {entry.event_type} v{entry.event_version} has no PUBLIC_FIELDS declaration, so "
        "analysts see none of its fields until it is declared"
    )


def catalog_entries(
    con: duckdb.DuckDBPyConnection, registry: Registry, *, idle_before: datetime | None = None
) -> list[CatalogEntry]:
    """The catalog (refresh it first), each entry with its flags; ``idle_before`` dates ``upcaster_idle``."""
    rows = con.execute(
        "SELECT stream_type, event_type, event_version, events, first_seen, last_seen, fields "
        "FROM analytics.event_catalog ORDER BY stream_type NULLS FIRST, event_type, event_version"
    ).fetchall()
    entries = [
        CatalogEntry(
            stream_type=r[0],
            event_type=str(r[1]),
            # A store may leave the version NULL: listed as v0, which no projection reads (the engine
            # dead-letters such events too), so it is flagged unhandled.
            event_version=int(r[2]) if r[2] is not None else 0,
            events=int(r[3]),
            first_seen=r[4],
            last_seen=r[5],
            fields=[
                FieldStats(
                    f["field"],
                    f["json_type"],
                    int(f["events"]),
                    float(f["presence"]),
                    f["first_seen"],
                    f["last_seen"],
                    registry.fields.is_private(str(r[1]), int(r[2] or 0), f["field"]),
                )
                for f in r[6]
            ],
        )
        for r in rows
    ]
    handled = handled_versions(registry)
    # A field's JSON types per event type (all versions), null aside: a value missing is not a type.
    types_of: dict[tuple[str | None, str, str], set[str]] = {}
    for entry in entries:
        for f in entry.fields:
            if f.json_type != "null":
                types_of.setdefault((entry.stream_type, entry.event_type, f.field), set()).add(f.json_type)
    for entry in entries:
        flag = _unhandled(entry, registry, handled)
        if flag:
            entry.flags.append(flag)
        mine: dict[str, set[str]] = {}
        for f in entry.fields:
            if f.json_type != "null":
                mine.setdefault(f.field, set()).add(f.json_type)
        for name, kinds in sorted(mine.items()):
            every = types_of[(entry.stream_type, entry.event_type, name)]
            if len(kinds) > 1:
                entry.flags.append(f"type_changed: {name} is {' and '.join(sorted(kinds))} in v{entry.event_version}")
            elif len(every) > 1:
                entry.flags.append(
                    f"type_changed: {name} is {next(iter(kinds))} in v{entry.event_version}, "
                    f"{' or '.join(sorted(every - kinds))} in another version"
                )
        undeclared = _undeclared(entry, registry)
        if undeclared:
            entry.flags.append(undeclared)
        upcaster = registry.upcasters.get(entry.event_type, entry.event_version)
        if upcaster is not None and idle_before is not None and entry.last_seen < idle_before:
            entry.flags.append(
                f"upcaster_idle: no {entry.event_type} v{entry.event_version} written since "
                f"{entry.last_seen:%Y-%m-%d}; its upcaster is needed only for the {entry.events:,} old events "
                "(retire it once they are migrated or no longer rebuilt from)"
            )
    return entries


def unhandled_entries(entries: list[CatalogEntry]) -> list[CatalogEntry]:
    """The entries flagged ``unhandled``."""
    return [e for e in entries if any(f.startswith("unhandled") for f in e.flags)]


@dataclass(frozen=True)
class SchemaChange:
    """Something that appeared in the schema since a date: a type/version, a field, or a field's new JSON type."""

    kind: str  # 'new_version' | 'new_field' | 'type_changed'
    stream_type: str | None
    event_type: str
    event_version: int
    first_seen: datetime
    field: str | None = None
    json_type: str | None = None
    before: list[str] = dataclasses.field(default_factory=list)  # type_changed: the field's JSON types before the date

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (timestamps as ISO 8601)."""
        loaded: dict[str, Any] = json.loads(json.dumps(asdict(self), default=lambda v: v.isoformat()))
        return loaded

    def describe(self) -> str:
        """One line."""
        what = f"{self.event_type} v{self.event_version}"
        when = f"first seen {self.first_seen:%Y-%m-%d %H:%M}"
        if self.kind == "new_version":
            return f"new: {what} ({when})"
        if self.kind == "new_field":
            return f"new field: {what}.{self.field} ({self.json_type}; {when})"
        return f"type changed: {what}.{self.field} is now {self.json_type} (was {' or '.join(self.before)}; {when})"


def schema_changes(entries: list[CatalogEntry], since: datetime) -> list[SchemaChange]:
    """What appeared since ``since``: new types and versions, new fields, fields with a new JSON type."""
    changes: list[SchemaChange] = []
    before: dict[tuple[str | None, str, str], set[str]] = {}
    for entry in entries:
        for f in entry.fields:
            if f.first_seen < since and f.json_type != "null":
                before.setdefault((entry.stream_type, entry.event_type, f.field), set()).add(f.json_type)
    for entry in entries:
        if entry.first_seen >= since:
            changes.append(
                SchemaChange("new_version", entry.stream_type, entry.event_type, entry.event_version, entry.first_seen)
            )
        for f in entry.fields:
            if f.first_seen < since or f.json_type == "null":
                continue
            known = before.get((entry.stream_type, entry.event_type, f.field), set())
            if known and f.json_type not in known:
                kind, was = "type_changed", sorted(known)
            elif entry.first_seen < since:
                kind, was = "new_field", []
            else:
                continue  # a field of a new version is part of that version
            changes.append(
                SchemaChange(
                    kind,
                    entry.stream_type,
                    entry.event_type,
                    entry.event_version,
                    f.first_seen,
                    f.field,
                    f.json_type,
                    was,
                )
            )
    return sorted(changes, key=lambda c: (c.first_seen, c.event_type, c.event_version, c.field or ""))
