"""Views for analysts over ``raw.all_events``: typed views per event type and version, stream and volume stats.

Naming (docs/lake.md): ``analytics.events_<type>_v<N>`` for version N of an event type (``ItemAdded``
v2 → ``analytics.events_item_added_v2``), and ``analytics.events_<type>`` for all its versions at
once (UNION ALL BY NAME: a field missing in a version is NULL there). Payload fields become typed
columns, inferred from a sample of the events of that type and version, except where the projections
declare a field's type (``requires``: ``DECIMAL(18,2)`` for money, ``BIGINT`` for counts): such a
column has exactly the declared type, and a value that does not fit it exactly (more decimals than
the scale, too many digits, not a number) is NULL with ``<column>_unfit`` true: never rounded.
Fields a domain declares private (:mod:`projections.fields`) are left out of the typed views: they stay
in ``raw`` and ``archive``, the operator path.

``analytics.stream_stats`` has one row per stream and flags streams longer than a threshold
(``is_long``: keep streams short) and streams whose first and last events lie further apart than a number
of days (``is_long_lived``, ``PROJECTIONIST_LONG_STREAM_DAYS``); ``analytics.event_volume_daily`` counts
events per day and type.
Every view gets COMMENT ON VIEW; DuckLake 1.5.5 refuses COMMENT ON COLUMN for views, so their column
comments live in ``meta.column_comments``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import duckdb

from eventstore.positions import Checkpoint
from eventstore.quoting import quote_literal
from eventstore.settings import DEFAULT_LONG_STREAM_DAYS, DEFAULT_LONG_STREAM_THRESHOLD
from projections.fields import FieldPolicy
from warehouse.lake import retry_conflicts, safe_name, set_column_comments, transaction

__all__ = ["DEFAULT_LONG_STREAM_THRESHOLD", "TypedView", "refresh_analytics", "untyped", "untyped_versions"]

SAMPLE_EVENTS = 10_000  # events per (type, version) used to infer its payload's columns

_BASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("global_position", "Position of the event in the store's global order."),
    ("stream_id", "The stream the event belongs to."),
    ("stream_version", "Version of the stream after this event."),
    ("event_id", "The event's unique id."),
    ("event_version", "Schema version of the event type."),
    ("recorded_at", "When the store recorded the event."),
    ("correlation_id", "metadata.correlation_id of the event."),
    ("causation_id", "metadata.causation_id of the event."),
)

# json_group_structure's names → the column type of a typed view.
_SCALARS = {
    "VARCHAR": "VARCHAR",
    "BOOLEAN": "BOOLEAN",
    "UBIGINT": "BIGINT",
    "BIGINT": "BIGINT",
    "DOUBLE": "DOUBLE",
}


@dataclass(frozen=True)
class TypedView:
    """A typed view of one event type and version."""

    event_type: str
    event_version: int
    columns: tuple[tuple[str, str, str], ...]  # (column, SQL type, JSON field)
    declared: tuple[str, ...] = ()  # the columns whose type a projection declared (they get an _unfit flag)
    declaration: tuple[str, ...] = ()  # "field TYPE" of every declared field of the event type, sorted
    public: tuple[str, ...] | None = None  # the declared public fields (None: the type is undeclared)

    @property
    def comment(self) -> str:
        """The view's comment; it names the declared types and public fields, so a changed declaration
        rebuilds the view."""
        declared = f"; declared types: {', '.join(self.declaration)}" if self.declaration else ""
        return (
            f"Events {self.event_type} version {self.event_version}, payload fields as typed columns "
            f"(inferred from up to {SAMPLE_EVENTS:,} events{declared}){_public_comment(self.public)}."
        )

    @property
    def name(self) -> str:
        return f"events_{safe_name(self.event_type)}_v{self.event_version}"


_PUBLIC_MARK = "; public fields only: "


def _public_comment(public: tuple[str, ...] | frozenset[str] | None) -> str:
    if public is None:
        return ""
    return _PUBLIC_MARK + (", ".join(sorted(public)) or "none") + " (the others are private)"


def _public_part(comment: str) -> str:
    """The public-fields part of a typed view's comment ('' for an undeclared type or an older view)."""
    _, found, rest = comment.rpartition(_PUBLIC_MARK)
    return _PUBLIC_MARK + rest.removesuffix(".") if found else ""


def _structures(
    con: duckdb.DuckDBPyConnection, pairs: Sequence[tuple[str, int]], archived: Set[tuple[str, int]]
) -> list[Any]:
    """The payload structure of each (event type, version), from up to :data:`SAMPLE_EVENTS` of its events.

    One statement for all of them: on a PostgreSQL catalog each statement over ``raw.all_events`` costs
    catalog round trips for both tiers (a first ingest's 6 versions took 0.43 s one statement each). A version
    with no event in ``archived`` (the versions the cold tier holds) is sampled from ``raw.events`` alone: each
    scan of ``archive.events``, empty or not, reads its rows inlined in the catalog, a round trip of 20-30 ms
    (a first ingest's 6 versions: 0.27 s through ``raw.all_events``, measured)."""
    if not pairs:
        return []
    samples = " UNION ALL ".join(
        f"SELECT {n} AS k, data FROM (SELECT data FROM {'raw.all_events' if pair in archived else 'raw.events'} "
        f"WHERE event_type = ? AND event_version = ? LIMIT {SAMPLE_EVENTS})"
        for n, pair in enumerate(pairs)
    )
    rows = dict(
        con.execute(
            f"SELECT k, json_group_structure(data)::VARCHAR FROM ({samples}) GROUP BY k",
            [value for pair in pairs for value in pair],
        ).fetchall()
    )
    return [json.loads(rows[n]) if rows.get(n) else {} for n in range(len(pairs))]


def _infer(
    event_type: str,
    version: int,
    structure: Any,
    declared: Mapping[str, str],
    public: frozenset[str] | None = None,
) -> TypedView:
    columns = []
    checked = []
    taken = {name for name, _ in _BASE_COLUMNS}
    for field in sorted(structure) if isinstance(structure, dict) else []:
        if public is not None and field not in public:
            continue  # private: not for analysts
        kind = declared.get(field) or (
            _SCALARS.get(structure[field], "JSON") if isinstance(structure[field], str) else "JSON"
        )
        column = safe_name(field)
        if column in taken:
            column = f"data_{column}"
        taken.add(column)
        columns.append((column, kind, field))
        if field in declared and kind.upper() != "VARCHAR":
            checked.append(column)
            taken.add(f"{column}_unfit")
    return TypedView(
        event_type,
        version,
        tuple(columns),
        tuple(checked),
        tuple(sorted(_declared_types(declared))),
        None if public is None else tuple(sorted(public)),
    )


#: A value of a declared DECIMAL or integer type fits when casting it to the declared type loses nothing:
#: compared with the same text cast to this wide type (exact for 20 integer and 18 decimal digits).
_WIDE_DECIMAL = "DECIMAL(38,18)"
_EXACT = (
    "DECIMAL",
    "NUMERIC",
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "INT",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
)


def _declared_types(fields: Mapping[str, str]) -> set[str]:
    return {f"{field} {kind}" for field, kind in fields.items() if kind.upper() != "VARCHAR"}


def _declared_part(comment: str) -> set[str]:
    """The declared types a typed view's comment names (empty for a view built before declarations)."""
    _, found, rest = comment.partition("; declared types: ")
    rest = rest.split(_PUBLIC_MARK)[0].removesuffix(".").removesuffix(")")
    return {part.strip() for part in rest.split(", ") if part.strip()} if found else set()


def _field_sql(kind: str, field: str) -> str:
    """The typed value of ``field``; for a declared type, NULL when the value does not fit it exactly."""
    path = quote_literal("$." + json.dumps(field))
    if kind == "JSON":
        return f"json_extract(data, {path})"
    text = f"json_extract_string(data, {path})"
    if kind.upper().startswith(_EXACT):  # DuckDB rounds '2.5' to 3 and 1.005 to 1.01: compare to a wide cast
        narrow = f"TRY_CAST({text} AS {kind})"
        return f"CASE WHEN TRY_CAST({text} AS {_WIDE_DECIMAL}) = {narrow} THEN {narrow} END"
    return f"TRY_CAST({text} AS {kind})"


def _view_sql(view: TypedView) -> str:
    base = ", ".join(name for name, _ in _BASE_COLUMNS)
    fields = "".join(f", {_field_sql(kind, field)} AS {column}" for column, kind, field in view.columns)
    for column, kind, field in view.columns:
        if column in view.declared:
            text = f"json_extract_string(data, {quote_literal('$.' + json.dumps(field))})"
            fields += f", ({text} IS NOT NULL AND {_field_sql(kind, field)} IS NULL) AS {column}_unfit"
    return (
        f"SELECT {base}{fields} FROM raw.all_events WHERE event_type = {quote_literal(view.event_type)} "
        f"AND event_version = {view.event_version}"
    )


def _stream_stats_sql(threshold: int, days: float) -> str:
    return (
        "SELECT stream_id, any_value(stream_type) AS stream_type, count(*) AS events, "
        "min(recorded_at) AS first_event_at, max(recorded_at) AS last_event_at, "
        "max(recorded_at) - min(recorded_at) AS duration, "
        "arg_min(event_type, stream_version) AS first_event_type, "
        "arg_max(event_type, stream_version) AS last_event_type, "
        f"count(*) > {int(threshold)} AS is_long, "
        f"max(recorded_at) - min(recorded_at) > to_seconds({float(days) * 86400!r}) AS is_long_lived "
        "FROM raw.all_events GROUP BY stream_id"
    )


_VOLUME_SQL = (
    "SELECT CAST(date_trunc('day', recorded_at) AS DATE) AS day, event_type, count(*) AS events, "
    "count(DISTINCT stream_id) AS streams FROM raw.all_events GROUP BY ALL"
)


#: Every event type and version in the lake, and whether the cold tier holds events of it.
_VERSIONS_SQL = (
    "SELECT event_type, event_version, bool_or(cold) FROM (SELECT event_type, event_version, false AS cold "
    "FROM raw.events UNION ALL SELECT event_type, event_version, true FROM archive.events) GROUP BY ALL ORDER BY ALL"
)


def _stream_stats_comment(threshold: int, days: float) -> str:
    comment = (
        f"One row per stream: its type, event count, first and last event, duration. is_long flags "
        f"streams of more than {threshold} events (long_stream_threshold={threshold}): keep streams "
        "short, or snapshot/close them."
    )
    return comment + f" is_long_lived flags a duration of more than {days:g} days (long_stream_days={days:g})."


_STREAM_STATS_COLUMNS = [
    ("stream_id", "The stream."),
    ("stream_type", "The kind of stream."),
    ("events", "Events in the stream."),
    ("first_event_at", "recorded_at of the stream's first event."),
    ("last_event_at", "recorded_at of the stream's last event."),
    ("duration", "last_event_at - first_event_at."),
    ("first_event_type", "Type of the stream's first event."),
    ("last_event_type", "Type of the stream's last event."),
    ("is_long", "True when the stream has more events than the long-stream threshold in the view's comment."),
    ("is_long_lived", "True when the stream's duration exceeds the long_stream_days in the view's comment."),
]
_VOLUME_COLUMNS = [
    ("day", "Day (UTC) the events were recorded."),
    ("event_type", "The event type."),
    ("events", "Events of that type recorded that day."),
    ("streams", "Distinct streams that received such events that day."),
]


def _existing_views(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    rows = con.execute(
        "SELECT view_name, coalesce(comment, '') FROM duckdb_views() WHERE database_name = 'lake' "
        "AND schema_name = 'analytics'"
    ).fetchall()
    return {str(name): str(comment) for name, comment in rows}


def untyped_versions(con: duckdb.DuckDBPyConnection, after: Checkpoint) -> list[tuple[str, int]]:
    """The event types and versions landed after ``after`` that have no typed view yet.

    What `follow` asks after each ingest: it reads only the new events, so a cycle pays for the
    views (:func:`refresh_analytics`, which scans the whole lake) only when a new type or version came.
    """
    rows = con.execute(
        "SELECT DISTINCT event_type, event_version FROM raw.events "
        "WHERE transaction_id > $1 OR (transaction_id = $1 AND global_position > $2) ORDER BY ALL",
        [after.transaction_id, after.global_position],
    ).fetchall()
    return untyped(con, [(str(t), int(v)) for t, v in rows])


def untyped(con: duckdb.DuckDBPyConnection, versions: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Those of ``versions`` (event type, version) that have no typed view yet (no read when there are none)."""
    existing = _existing_views(con) if versions else {}
    return [(t, v) for t, v in versions if f"events_{safe_name(t)}_v{v}" not in existing]


def refresh_analytics(
    con: duckdb.DuckDBPyConnection,
    *,
    long_stream_threshold: int = DEFAULT_LONG_STREAM_THRESHOLD,
    long_stream_days: float = DEFAULT_LONG_STREAM_DAYS,
    declared: Mapping[str, Mapping[str, str]] | None = None,
    fields: FieldPolicy | None = None,
    force: bool = False,
) -> list[str]:
    """(Re)create the analytics views when event types, versions or the threshold changed; returns views written.

    ``declared`` maps an event type to ``{field: SQL type}`` (the projections' ``requires``:
    :func:`projections.registry.declared_types`). Typed views of versions already present are kept (a
    version's payload shape is fixed) unless the declared types of their event type changed; with
    ``declared=None`` (unknown: a projection module is broken) existing views keep their types. ``fields``
    (:func:`projections.registry.field_policy`) says which payload fields are public: the others are left
    out, and a view is rebuilt when its version's public fields change; with None they stay as they are.
    ``force`` re-infers every one.
    """
    known = declared is not None  # None: the declarations are unknown now; keep the views' types as they are
    declared = declared or {}

    def public(event_type: str, version: int) -> frozenset[str] | None:
        return fields.public(event_type, version) if fields is not None else None

    def stale(event_type: str, version: int) -> bool:
        comment = existing[f"events_{safe_name(event_type)}_v{version}"]
        if known and _declared_part(comment) != _declared_types(declared.get(event_type, {})):
            return True
        return fields is not None and _public_part(comment) != _public_comment(public(event_type, version))

    tiers = con.execute(_VERSIONS_SQL).fetchall()
    pairs = [(str(t), int(v)) for t, v, _ in tiers]
    archived = {(str(t), int(v)) for t, v, cold in tiers if cold}
    existing = _existing_views(con)
    stats_comment = _stream_stats_comment(long_stream_threshold, long_stream_days)
    new_pairs = [(t, v) for t, v in pairs if force or f"events_{safe_name(t)}_v{v}" not in existing or stale(t, v)]
    stale_stats = existing.get("stream_stats") != stats_comment or "event_volume_daily" not in existing
    if not new_pairs and not stale_stats:
        return []
    views = [
        _infer(t, v, structure, declared.get(t, {}), public(t, v))
        for (t, v), structure in zip(new_pairs, _structures(con, new_pairs, archived), strict=True)
    ]
    written: list[str] = []

    def write() -> None:
        written.clear()
        comments: dict[tuple[str, str], list[tuple[str, str]]] = {}  # written once, at the end
        with transaction(con):
            for view in views:
                _create_view(
                    con,
                    comments,
                    view.name,
                    _view_sql(view),
                    view.comment,
                    [
                        *_BASE_COLUMNS,
                        *[(c, f"data.{f} as {k}.") for c, k, f in view.columns],
                        *[
                            (
                                f"{c}_unfit",
                                f"True when data.{f} holds a value that does not fit {k} exactly ({c} is NULL).",
                            )
                            for c, k, f in view.columns
                            if c in view.declared
                        ],
                    ],
                )
                written.append(f"analytics.{view.name}")
            for event_type in sorted({view.event_type for view in views}):
                versions = [v for t, v in pairs if t == event_type]
                union = " UNION ALL BY NAME ".join(
                    f"SELECT * FROM analytics.events_{safe_name(event_type)}_v{v}" for v in versions
                )
                name = f"events_{safe_name(event_type)}"
                _create_view(
                    con,
                    comments,
                    name,
                    union,
                    (
                        f"Events {event_type}, all versions ({', '.join(map(str, versions))}); fields missing "
                        f"in a version are NULL. One view per version: analytics.{name}_v<N>."
                    ),
                    [],
                )
                described = [str(r[0]) for r in con.execute(f"DESCRIBE analytics.{name}").fetchall()]
                base = dict(_BASE_COLUMNS)
                comments[("analytics", name)] = [
                    (c, base.get(c) or f"Payload field {c} (typed per version in analytics.{name}_v<N>).")
                    for c in described
                ]
                written.append(f"analytics.{name}")
            if stale_stats or force:
                _create_view(
                    con,
                    comments,
                    "stream_stats",
                    _stream_stats_sql(long_stream_threshold, long_stream_days),
                    stats_comment,
                    _STREAM_STATS_COLUMNS,
                )
                _create_view(
                    con,
                    comments,
                    "event_volume_daily",
                    _VOLUME_SQL,
                    "Events per day (UTC) and event type.",
                    _VOLUME_COLUMNS,
                )
                written.extend(["analytics.stream_stats", "analytics.event_volume_daily"])
            set_column_comments(con, comments)

    retry_conflicts(write, "refreshing the analytics views")
    return written


def _create_view(
    con: duckdb.DuckDBPyConnection,
    comments: dict[tuple[str, str], list[tuple[str, str]]],
    name: str,
    query: str,
    comment: str,
    columns: list[tuple[str, str]],
) -> None:
    """Create ``analytics.<name>`` with its comment; its column comments go to ``comments`` (written together)."""
    con.execute(f"CREATE OR REPLACE VIEW analytics.{name} AS {query}")
    con.execute(f"COMMENT ON VIEW analytics.{name} IS {quote_literal(comment)}")
    comments[("analytics", name)] = columns
