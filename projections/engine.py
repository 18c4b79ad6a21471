"""Computing a projection over any DuckDB relation shaped like raw.events.

``compute`` gives a projection's rows, all of them or only those of some keys (each computed from
*all* the events of its key, so an incremental update can replace exactly those rows);
``touched_keys`` gives the keys affected by the events of a checkpoint range.

The pipeline, all of it SQL until a polars or fold body takes over:

1. upcast (``upcasting.upcast_sql``) and keep the event types the projection consumes;
2. validate each event's envelope (``recorded_at`` a Python datetime can hold, an
   ``event_version`` an upcaster or the projection declares: comparisons of its own columns) and
   its declared required fields: events failing it are *poison*, reported as
   ``(event_id, reason)``; policy ``skip`` computes without them, ``stop`` raises
   :class:`~eventstore.errors.PoisonEventError` naming the first one;
3. run the body; a fold also reports as poison an event it cannot decode (nested too deeply for
   Python, say) or whose ``evolve`` raises;
4. cast the result to the declared column types, keep the requested keys, order by key.

The validation runs inside the body's own pass first (``single_pass``: an event failing it raises
as soon as it is read, so a clean computation reads, upcasts and parses its events once). Only
when that raises is the computation run again with the exact checks (``two_pass``: list every
poison event first, then compute; ``precise``: also try the casts a value could overflow), which
name the events and apply the policy. So what is reported as poison never depends on which path ran.

Keys and streams: a projection keyed by stream (no ``stream_keys``) recomputes a key from its
stream's events. Otherwise ``stream_keys`` says which keys each stream contributes to; the rows of
a key are computed from every contributing stream, and a stream touched in a range affects the
keys it contributed to before the range and those it contributes to after it.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, TypeAlias

import duckdb
import polars as pl
import pyarrow as pa

from eventstore.errors import ConfigurationError
from eventstore.positions import Checkpoint
from eventstore.quoting import quote_literal
from projections.definition import LAST_GLOBAL_POSITION, Event, Fold, Polars, Projection, Sql, _normalize_type
from projections.errors import PoisonEventError, ProjectionDefinitionError
from projections.upcasting import EVENT_COLUMNS, Upcasters, _pointer, events_source, upcast_sql

__all__ = [
    "CHECKS",
    "DATA_ERRORS",
    "ComputeResult",
    "InsertResult",
    "PoisonEvent",
    "compute",
    "compute_into",
    "find_poison",
    "poison_stop_error",
    "touched_keys",
]

Keys: TypeAlias = pa.Table | Sequence[Any]
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
_NUMBER_TYPES = {"FLOAT", "DOUBLE"}


class _FoldRowsError(ProjectionDefinitionError):
    """Raised when a fold's rows hold a value its column's type cannot take (perhaps an event's overflowing field)."""


# What a value overflowing its declared type raises, in DuckDB (casts, json_transform), polars, or
# the Arrow conversion of a fold's rows (a Decimal of 400 digits from a JSON number like 1e400).
_CONVERSION_ERRORS = (
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
    pl.exceptions.PolarsError,
    _FoldRowsError,
)
#: What a computation raises when an event's data cannot be used (a poison event in the single pass,
#: a value overflowing its type): the next, more thorough check of ``CHECKS`` names the event.
DATA_ERRORS = _CONVERSION_ERRORS

Check: TypeAlias = Literal["single_pass", "two_pass", "precise"]
#: The poison checks of a computation, cheapest first (see the module docstring).
CHECKS: tuple[Check, ...] = ("single_pass", "two_pass", "precise")


@dataclass(frozen=True)
class PoisonEvent:
    """An event a projection could not process, and why: the caller dead-letters it."""

    event_id: str
    global_position: int
    transaction_id: int
    stream_id: str
    event_type: str
    event_version: int
    reason: str


@dataclass(frozen=True)
class ComputeResult:
    """A projection's rows (declared columns + ``last_global_position``, ordered by key) and its poison events."""

    rows: pa.Table
    poison: tuple[PoisonEvent, ...] = ()


@dataclass(frozen=True)
class InsertResult:
    """How many rows :func:`compute_into` appended to its table, and the poison events it left out."""

    rows: int
    poison: tuple[PoisonEvent, ...] = ()


_JSON_KINDS = {
    "VARCHAR": "('VARCHAR')",
    "BOOLEAN": "('BOOLEAN')",
    "integer": "('BIGINT', 'UBIGINT')",
    "number": "('BIGINT', 'UBIGINT', 'DOUBLE')",
}


def _json_kinds(type_: str, precise: bool) -> tuple[str | None, bool]:
    """The JSON value types acceptable for DuckDB type ``type_``, and whether a cast must also be tried.

    A number of the right JSON kind can still overflow a DECIMAL or a narrow integer; trying that
    cast costs a second parse of every event, so it is only done in the ``precise`` check, which
    runs when a computation fails on a conversion.
    """
    normalized = _normalize_type(type_)
    if normalized == "JSON":
        return None, False
    if normalized in ("VARCHAR", "BOOLEAN"):
        return _JSON_KINDS[normalized], False
    if normalized in _INTEGER_TYPES:
        # A JSON integer reads as UBIGINT when positive: one above 2**63 - 1 passes for a BIGINT until cast.
        return _JSON_KINDS["integer"], precise and normalized != "HUGEINT"
    if normalized.startswith("DECIMAL") or normalized in _NUMBER_TYPES:
        return _JSON_KINDS["number"], precise and normalized.startswith("DECIMAL")
    return _JSON_KINDS["VARCHAR"], True  # dates, timestamps, uuids...: text that must parse


# recorded_at a fold can be handed: Python's datetime holds years 1 to 9999, and a day of margin at
# each end keeps the bounds in range in any session time zone. PostgreSQL and DuckDB hold far more
# (infinity, -infinity, years up to 294,000 and BC).
_EARLIEST = "TIMESTAMPTZ '0001-01-02 00:00:00+00'"
_LATEST = "TIMESTAMPTZ '9999-12-31 00:00:00+00'"


def _versions_sql(versions: Mapping[str, int]) -> str:
    """SQL: the event's version is one an upcaster or the projection declares (1 up to its type's highest)."""
    higher = {t: v for t, v in sorted(versions.items()) if v > 1}
    if not higher:
        return "event_version = 1"
    cases = " ".join(f"WHEN {quote_literal(t)} THEN {v}" for t, v in higher.items())
    return f"event_version BETWEEN 1 AND CASE event_type {cases} ELSE 1 END"


def _envelope_sql(versions: Mapping[str, int]) -> str:
    """SQL: the event's own columns can be projected, by plain comparisons (no parse).

    The same for every kind of body: what is poison must not depend on the kind (a version written
    as a fold beside one in SQL would otherwise differ by the events each dropped).
    """
    return f"coalesce(recorded_at BETWEEN {_EARLIEST} AND {_LATEST}, true) AND {_versions_sql(versions)}"


def _envelope_reasons(versions: Mapping[str, int]) -> list[str]:
    """``WHEN ... THEN reason`` clauses for the events failing :func:`_envelope_sql`, first to last."""
    at = "CAST(recorded_at AS VARCHAR)"
    return [
        f"WHEN NOT isfinite(recorded_at) THEN 'recorded_at is ' || {at}",
        f"WHEN recorded_at NOT BETWEEN {_EARLIEST} AND {_LATEST} "
        f"THEN 'recorded_at ' || {at} || ' is out of range (years 1 to 9999)'",
        f"WHEN NOT coalesce({_versions_sql(versions)}, false) THEN event_type || ' v' || "
        "coalesce(CAST(event_version AS VARCHAR), 'NULL') || ': no upcaster or projection declares this version'",
    ]


def _known_versions(projection: Projection, upcasters: Upcasters) -> dict[str, int]:
    """The highest version of each event type ``projection`` consumes that an upcaster or the projection declares."""
    return {t: max(upcasters.latest(t) or 1, projection.event_versions.get(t, 1)) for t in sorted(projection.consumes)}


def _checked_sql(
    projection: Projection, base: str, versions: Mapping[str, int], precise: bool = False, root: bool = True
) -> str:
    """``base`` plus ``_ok`` (the event can be projected) and the columns ``_poison_reason`` needs.

    ``versions`` are the highest known versions of the consumed types (:func:`_known_versions`):
    with ``recorded_at``, checked by comparisons of the event's own columns (:func:`_envelope_sql`).

    One JSON parse per event gives the document's type and its required fields' types
    (``json_type(data, [paths])``): a missing field, a JSON null, a wrong type all show there.
    Events with fields that must also cast (dates; decimals when ``precise``) get a second parse,
    ``json_extract_string``. Without ``root`` (the single pass, which needs ``_ok`` only) the
    document's own type is looked up only for event types with no required field: a path below
    the root resolves in an object only, so checking the fields checks the document too. Nor is
    malformed JSON caught there (``try``, about 10 % of the check): it raises, as poison must.
    """
    first = 2 if root else 1
    caught = "try" if root else ""
    envelope = _envelope_sql(versions)
    types: list[str] = []
    texts: list[str] = []
    conditions: list[str] = []
    for event_type, fields in sorted(projection.requires.items()):
        if not fields:
            continue
        # JSON pointers ('/name'), not JSONPath ('$.name'): DuckDB resolves a list of pointers about
        # 20 % faster (a list of three over 1.26 M item events: 84-106 ms against 105-137, measured).
        paths = ", ".join(["''"] * root + [_pointer(name) for name in fields])
        types.append(f"WHEN {quote_literal(event_type)} THEN {caught}(json_type(data, [{paths}]))")
        checks = []
        cast_paths = []
        for i, (name, type_) in enumerate(fields.items(), start=first):
            kinds, cast = _json_kinds(type_, precise)
            checks.append(f"_t[{i}] IN {kinds}" if kinds else f"_t[{i}] IS NOT NULL AND _t[{i}] <> 'NULL'")
            if cast:
                cast_paths.append(_pointer(name))
                checks.append(f"TRY_CAST(_s[{len(cast_paths)}] AS {_normalize_type(type_)}) IS NOT NULL")
        if cast_paths:
            extract = f"json_extract_string(data, [{', '.join(cast_paths)}])"
            texts.append(f"WHEN {quote_literal(event_type)} THEN {caught}({extract})")
        conditions.append(f"WHEN {quote_literal(event_type)} THEN {' AND '.join(checks)}")
    texts_expr = f"CASE event_type {' '.join(texts)} END" if texts else "CAST(NULL AS VARCHAR[])"
    if not root:
        types_expr = f"CASE event_type {' '.join(types)} END" if types else "CAST(NULL AS VARCHAR[])"
        document_ok = "json_type(data) = 'OBJECT'"
        ok = f"CASE event_type {' '.join(conditions)} ELSE {document_ok} END" if conditions else document_ok
        return (
            f"SELECT *, coalesce({envelope} AND {ok}, false) AS _ok FROM ("
            f"SELECT *, {types_expr} AS _t, {texts_expr} AS _s FROM ({base}) AS consumed) AS typed"
        )
    types_expr = (
        f"CASE event_type {' '.join(types)} ELSE [try(json_type(data))] END" if types else "[try(json_type(data))]"
    )
    fields_ok = f"CASE event_type {' '.join(conditions)} ELSE true END" if conditions else "true"
    return (
        f"SELECT *, coalesce({envelope} AND _t[1] = 'OBJECT' AND ({fields_ok}), false) AS _ok FROM ("
        f"SELECT *, {types_expr} AS _t, {texts_expr} AS _s FROM ({base}) AS consumed) AS typed"
    )


def _poison_reason(projection: Projection, versions: Mapping[str, int], precise: bool = False) -> str:
    """SQL over ``_checked_sql`` columns: why an event that is not ``_ok`` cannot be projected."""
    reasons = [
        *_envelope_reasons(versions),
        "WHEN data IS NULL THEN 'data is NULL'",
        "WHEN _t[1] IS NULL THEN 'data is not valid JSON'",
        "WHEN _t[1] <> 'OBJECT' THEN 'data is not a JSON object but ' || _t[1]",
    ]
    for event_type, fields in sorted(projection.requires.items()):
        is_type = f"event_type = {quote_literal(event_type)}"
        cast_index = 0
        for i, (name, type_) in enumerate(fields.items(), start=2):
            kinds, cast = _json_kinds(type_, precise)
            normalized = _normalize_type(type_)
            reasons.append(
                f"WHEN {is_type} AND (_t[{i}] IS NULL OR _t[{i}] = 'NULL') "
                f"THEN {quote_literal(f'{event_type} v')} || event_version || {quote_literal(f' lacks field {name!r}')}"
            )
            wrong = f"{quote_literal(f'{event_type} field {name!r} is not {normalized}: JSON ')} || _t[{i}]"
            if kinds:
                reasons.append(f"WHEN {is_type} AND _t[{i}] NOT IN {kinds} THEN {wrong}")
            if cast:
                cast_index += 1
                value = f"_s[{cast_index}]"
                reasons.append(
                    f"WHEN {is_type} AND TRY_CAST({value} AS {normalized}) IS NULL "
                    f"THEN {quote_literal(f'{event_type} field {name!r} is not {normalized}: ')} || left({value}, 60)"
                )
    return f"CASE {' '.join(reasons)} ELSE 'invalid' END"


def _valid_sql(checked: str) -> str:
    return f"SELECT * EXCLUDE (_t, _s, _ok) FROM ({checked}) AS checked WHERE _ok"


_POISON_MARK = "projectionist: an event fails the projection's declared fields"


def _guarded_sql(projection: Projection, base: str, versions: Mapping[str, int], precise: bool = False) -> str:
    """Every event of ``base``, raising at the first one that fails the declared fields.

    The LIMIT (of more rows than a table can hold) is a barrier: DuckDB does not push a filter
    through it, so the body's own filters (``WHERE event_type = ...``) stay above the guard and
    every consumed event meets the check, as in the two-pass path; without it they reach the scan
    and events the body skips would go unchecked (seen in the plans of DuckDB 1.5).
    """
    checked = _checked_sql(projection, base, versions, precise, root=False)
    return (
        f"SELECT * EXCLUDE (_t, _s, _ok) FROM ({checked}) AS checked "
        f"WHERE CASE WHEN _ok THEN true ELSE error({quote_literal(_POISON_MARK)}) END LIMIT 9223372036854775807"
    )


class _Run:
    """One computation's connection, projection and the SQL of its events."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, projection: Projection, events: str, upcasters: Upcasters | None
    ) -> None:
        if upcasters is None:
            from projections.registry import discover

            upcasters = discover().upcasters
        self.con = con
        self.projection = projection
        self.columns = events_source(con, events)
        self.events, self.upcasters = events, upcasters
        types = ", ".join(quote_literal(t) for t in sorted(projection.consumes))
        self.where = f"event_type IN ({types})"
        self.consumed = upcast_sql(con, events, upcasters, where=self.where, columns=self.columns)
        self.versions = _known_versions(projection, upcasters)

    @functools.cached_property
    def consumed_raising(self) -> str:
        """The consumed events for the single pass, which raises on any data error anyway (upcast_sql's ``catch``)."""
        return upcast_sql(self.con, self.events, self.upcasters, where=self.where, columns=self.columns, catch=False)

    def restricted(self, streams: str | None, raising: bool = False) -> str:
        """Consumed events, of the streams in query ``streams`` only when given."""
        consumed = self.consumed_raising if raising else self.consumed
        if streams is None:
            return consumed
        return f"SELECT * FROM ({consumed}) AS e WHERE stream_id IN ({streams})"

    def poison(self, base: str, precise: bool = False) -> list[PoisonEvent]:
        checked = _checked_sql(self.projection, base, self.versions, precise)
        # Counting through an aggregate FILTER first: a WHERE on _ok would be pushed down into the
        # projection and re-parse the JSON once per reference to _t (four times slower, measured).
        found = self.con.sql(f"SELECT count(*) FILTER (WHERE NOT _ok) FROM ({checked}) AS checked").fetchone()
        if found is None or found[0] == 0:
            return []
        rows = self.con.sql(
            f"SELECT event_id::VARCHAR, global_position, transaction_id, stream_id, event_type, event_version, "
            f"{_poison_reason(self.projection, self.versions, precise)} FROM ({checked}) AS checked WHERE NOT _ok "
            "ORDER BY transaction_id, global_position"
        ).fetchall()
        return [PoisonEvent(*row) for row in rows]

    def valid(self, base: str, poison: Sequence[PoisonEvent], precise: bool = False) -> str:
        return _valid_sql(_checked_sql(self.projection, base, self.versions, precise)) if poison else base

    @contextmanager
    def registered(self, table: pa.Table) -> Iterator[str]:
        name = f"projectionist_{uuid.uuid4().hex}"
        self.con.register(name, table)
        try:
            yield name
        finally:
            self.con.unregister(name)

    def key_table(self, keys: Keys) -> pa.Table:
        """``keys`` as an Arrow table with the key column names."""
        names = list(self.projection.key)
        if isinstance(keys, pa.Table):
            missing = [k for k in names if k not in keys.column_names]
            if missing:
                raise ConfigurationError(f"keys for {self.projection.label} lack the key column(s) {missing}")
            return keys.select(names)
        tuples = [k if isinstance(k, tuple) else (k,) for k in keys]
        if any(len(t) != len(names) for t in tuples):
            raise ConfigurationError(f"keys for {self.projection.label} must be values of {names} (tuples if several)")
        return pa.table({n: [t[i] for t in tuples] for i, n in enumerate(names)})

    def key_join(self, relation: str, keys: str) -> str:
        types = {c.name: c.type for c in self.projection.columns}
        on = " AND ".join(
            f"CAST(r.{k} AS {types[k]}) IS NOT DISTINCT FROM CAST(k.{k} AS {types[k]})" for k in self.projection.key
        )
        return f"SELECT r.* FROM ({relation}) AS r SEMI JOIN {keys} AS k ON {on}"

    def stream_keys(self, valid: str) -> pa.Table:
        """``stream_id`` and the key columns each stream of ``valid`` contributes to."""
        spec = self.projection.stream_keys
        key = ", ".join(self.projection.key)
        if isinstance(spec, Sql):
            query = f"WITH events AS ({valid}) SELECT DISTINCT stream_id, {key} FROM ({spec.query}) AS s"
            return self.con.sql(query).to_arrow_table()
        assert isinstance(spec, Polars)
        frame = spec.function(_lazy_frame(self.con, valid))
        collected = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
        return collected.select(["stream_id", *self.projection.key]).unique().to_arrow()

    def contributions(self, base: str) -> pa.Table:
        """``stream_keys`` over the valid events of ``base`` (poison left out, whatever the policy)."""
        precise = isinstance(self.projection.stream_keys, Polars)  # see _compute_checked
        try:
            return self.stream_keys(self.valid(base, self.poison(base, precise), precise))
        except _CONVERSION_ERRORS:  # see _compute
            return self.stream_keys(self.valid(base, self.poison(base, precise=True), precise=True))

    def finish(self, relation: str, keys: str | None, ordered: bool = True) -> str:
        """SQL: ``relation`` cast to the declared output columns, only ``keys`` if given, ordered by key."""
        have = self.con.sql(f"SELECT * FROM ({relation}) AS r LIMIT 0").columns
        missing = [c.name for c in self.projection.output_columns if c.name not in have]
        if missing:
            raise ProjectionDefinitionError(
                f"the body of {self.projection.label} does not return the declared column(s) {missing}"
            )
        if keys is not None:
            relation = self.key_join(relation, keys)
        select = ", ".join(f"CAST({c.name} AS {c.type}) AS {c.name}" for c in self.projection.output_columns)
        order = f" ORDER BY {', '.join(self.projection.key)}" if ordered else ""
        return f"SELECT {select} FROM ({relation}) AS result{order}"


class _Sink:
    """Where a computation's rows go: an Arrow table (``compute``) or an existing table (``compute_into``)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str | None) -> None:
        self.con = con
        self.table = table
        # Rows returned are ordered by key; rows appended to a table need no order (sorting 400,000
        # carts took about 0.08 s of a 1 s rebuild, measured), a query orders them when it needs to.
        self.ordered = table is None

    def write(self, query: str) -> pa.Table | int:
        if self.table is None:
            return self.con.sql(query).to_arrow_table()
        row = self.con.execute(f"INSERT INTO {self.table} {query}").fetchone()
        return int(row[0]) if row else 0


def poison_stop_error(projection: Projection, poison: Sequence[PoisonEvent]) -> PoisonEventError:
    """The error of policy ``stop``: names the first poison event and counts the others."""
    first = poison[0]
    return PoisonEventError(projection.label, first.event_id, first.global_position, first.reason, len(poison) - 1)


def compute(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    keys: Keys | None = None,
    *,
    upcasters: Upcasters | None = None,
    policy: Literal["skip", "stop"] | None = None,
) -> ComputeResult:
    """Compute ``projection`` over relation ``events`` (a table or view shaped like raw.events).

    Without ``keys``: every row. With ``keys`` (an Arrow table of the key columns, or a list of key
    values or tuples): exactly the rows of those keys, each computed from all the events of its key.
    ``upcasters`` defaults to the discovered ones (``discover().upcasters``); ``policy`` defaults to
    the projection's ``poison.rebuild`` for a full computation and ``poison.live`` for keys.
    """
    run = _Run(con, projection, events, upcasters)
    policy = policy or (projection.poison.rebuild if keys is None else projection.poison.live)
    sink = _Sink(con, None)
    if keys is None:
        return _result(_compute(run, None, None, policy, sink))
    with run.registered(run.key_table(keys)) as key_view:
        if projection.keyed_by_stream:
            streams: str | None = f"SELECT {projection.key[0]} FROM {key_view}"
        else:
            everything = run.consumed
            contributions = run.contributions(everything)
            with run.registered(contributions) as contribution_view:
                contributing = run.key_join(f"SELECT * FROM {contribution_view}", key_view)
                streams_of_keys = run.con.sql(f"SELECT DISTINCT stream_id FROM ({contributing}) AS c").to_arrow_table()
            # Materialized: the contributions view is gone after this block.
            with run.registered(streams_of_keys) as streams_view:
                return _result(_compute(run, f"SELECT stream_id FROM {streams_view}", key_view, policy, sink))
        return _result(_compute(run, streams, key_view, policy, sink))


def compute_into(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    table: str,
    *,
    upcasters: Upcasters | None = None,
    policy: Literal["skip", "stop"] | None = None,
    check: Check = "single_pass",
) -> InsertResult:
    """Compute every row of ``projection`` over relation ``events`` and append them to ``table``.

    ``table`` exists and has the projection's output columns in order. An SQL body's rows go from
    DuckDB into the table without passing through Python. ``check`` is one of :data:`CHECKS`: with
    ``single_pass`` a poison event raises one of :data:`DATA_ERRORS` without being named; a caller
    then rolls its transaction back (a failed statement aborts it) and calls again with the next
    check, which names poison events and applies ``policy`` (default ``poison.rebuild``).
    """
    run = _Run(con, projection, events, upcasters)
    inserted = _compute_checked(run, None, None, policy or projection.poison.rebuild, check, _Sink(con, table))
    assert isinstance(inserted[0], int)
    return InsertResult(inserted[0], inserted[1])


def find_poison(
    con: duckdb.DuckDBPyConnection, projection: Projection, events: str, *, upcasters: Upcasters | None = None
) -> list[PoisonEvent]:
    """The events of ``events`` failing ``projection``'s declared fields, in reading order (reads only)."""
    run = _Run(con, projection, events, upcasters)
    return run.poison(run.consumed, precise=True)


def _result(computed: tuple[pa.Table | int, tuple[PoisonEvent, ...]]) -> ComputeResult:
    rows, poison = computed
    assert isinstance(rows, pa.Table)
    return ComputeResult(rows, poison)


def _compute(
    run: _Run, streams: str | None, key_view: str | None, policy: str, sink: _Sink
) -> tuple[pa.Table | int, tuple[PoisonEvent, ...]]:
    for check in CHECKS:
        try:
            return _compute_checked(run, streams, key_view, policy, check, sink)
        except _CONVERSION_ERRORS:
            # single_pass: some event is poison (or a value overflows); two_pass names poison events;
            # perhaps a value of the right JSON kind overflows its type: the precise check finds and
            # reports such events; if it finds none, its attempt fails the same way and says why.
            if check == CHECKS[-1]:
                raise
    raise AssertionError("unreachable")


def _compute_checked(
    run: _Run, streams: str | None, key_view: str | None, policy: str, check: Check, sink: _Sink
) -> tuple[pa.Table | int, tuple[PoisonEvent, ...]]:
    """One computation over the consumed events (of the streams in query ``streams`` only, when given)."""
    projection = run.projection
    base = run.restricted(streams, raising=check == "single_pass")
    # polars reads a number beyond its type (1e400 in a DECIMAL field) as null instead of failing,
    # so no later check would run: for a polars body the casts are tried from the first check on.
    always_precise = isinstance(projection.body, Polars)
    if check == "single_pass":
        poison: list[PoisonEvent] = []
        valid = _guarded_sql(projection, base, run.versions, always_precise)
    else:
        precise = check == "precise" or always_precise
        poison = run.poison(base, precise)
        if poison and policy == "stop":
            raise poison_stop_error(projection, poison)
        valid = run.valid(base, poison, precise)
    body = projection.body
    if isinstance(body, Sql):
        relation = f"WITH events AS ({valid}) SELECT * FROM ({body.query}) AS body"
        return sink.write(run.finish(relation, key_view, sink.ordered)), tuple(poison)
    if isinstance(body, Polars):
        frame = body.function(_lazy_frame(run.con, valid))
        result = (frame.collect() if isinstance(frame, pl.LazyFrame) else frame).to_arrow()
        with run.registered(result) as view:
            return sink.write(run.finish(f"SELECT * FROM {view}", key_view, sink.ordered)), tuple(poison)
    assert isinstance(body, Fold)
    folded, fold_poison = _fold(run, valid, body, policy)
    with run.registered(folded) as view:
        return sink.write(run.finish(f"SELECT * FROM {view}", key_view, sink.ordered)), (*poison, *fold_poison)


_FOLD_COLUMNS = EVENT_COLUMNS  # a fold sees the columns every projection reads


def _fold(run: _Run, valid: str, body: Fold, policy: str) -> tuple[pa.Table, list[PoisonEvent]]:
    """Apply ``body`` per stream in stream order; return the rows and the events whose ``evolve`` raised."""
    projection = run.projection
    extra = [c if c in run.columns else f"CAST(NULL AS VARCHAR) AS {c}" for c in ("correlation_id", "causation_id")]
    select = ", ".join([*_FOLD_COLUMNS[:4], "CAST(event_id AS VARCHAR) AS event_id", *_FOLD_COLUMNS[5:], *extra])
    reader = run.con.sql(f"SELECT {select} FROM ({valid}) AS v ORDER BY stream_id, stream_version").to_arrow_reader(
        100_000
    )
    key = projection.key[0]
    rows: list[dict[str, Any]] = []
    poison: list[PoisonEvent] = []
    initial, evolve, result = body.initial, body.evolve, body.result
    # One decoder for all events: json.loads(..., parse_float=...) builds a new one per call.
    decode = json.JSONDecoder(parse_float=Decimal).decode
    stream: str | None = None
    state: Any = None
    last: int | None = None

    def emit() -> None:
        if stream is None or last is None:
            return
        row = result(state) if result is not None else state
        if row is not None:
            rows.append({**row, key: stream, LAST_GLOBAL_POSITION: last})

    new_event = Event.__new__
    for batch in reader:
        for position, transaction, stream_id, version, event_id, kind, event_version, data, at, cid, caid in zip(
            *batch.to_pydict().values(), strict=True
        ):
            if stream_id != stream:
                emit()
                stream, state, last = stream_id, initial(), None
            # Each event is decoded and applied apart: whatever one raises makes it poison, never the
            # computation fail (data nested deeper than Python's recursion limit, an integer of more
            # digits than int() takes, an error in evolve).
            try:
                event = new_event(
                    Event,
                    position,
                    transaction,
                    stream_id,
                    version,
                    event_id,
                    kind,
                    event_version,
                    decode(data),
                    at,
                    cid,
                    caid,
                )
            except RecursionError as exc:
                error: Exception = exc
                reason = "data is nested too deeply for Python (RecursionError)"
            except Exception as exc:
                error, reason = exc, f"data cannot be decoded in Python: {type(exc).__name__}: {_one_line(exc)}"
            else:
                try:
                    state = evolve(state, event)
                except Exception as exc:
                    error, reason = exc, f"{type(exc).__name__} in evolve: {_one_line(exc)}"
                else:
                    last = position
                    continue
            found = PoisonEvent(event_id, position, transaction, stream_id, kind, event_version, reason)
            if policy == "stop":
                raise poison_stop_error(projection, [found]) from error
            poison.append(found)
    emit()
    return _rows_table(run, rows), poison


def _one_line(error: BaseException, limit: int = 200) -> str:
    """``error``'s message on one line, cut at ``limit`` characters: a reason is a line of a dead letter."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rows_table(run: _Run, rows: list[dict[str, Any]]) -> pa.Table:
    """Fold rows as Arrow, each column typed by inference or, failing that, by its declared type."""
    declared = run.con.sql(
        "SELECT " + ", ".join(f"CAST(NULL AS {c.type}) AS {c.name}" for c in run.projection.output_columns)
    ).to_arrow_table()
    arrays = {}
    for column in run.projection.output_columns:
        values = [row.get(column.name) for row in rows]
        try:
            arrays[column.name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            try:
                arrays[column.name] = pa.array(values, type=declared.schema.field(column.name).type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                raise _FoldRowsError(
                    f"the fold of {run.projection.label} returns values of column {column.name!r} that are not "
                    f"{column.type}: {exc}"
                ) from None
    if not rows:
        return declared.slice(0, 0)
    return pa.table(arrays)


def _later_than(checkpoint: Checkpoint) -> str:
    """SQL: the event comes after ``checkpoint`` in (transaction_id, global_position) order."""
    tx, position = int(checkpoint.transaction_id), int(checkpoint.global_position)
    return f"(transaction_id > {tx} OR (transaction_id = {tx} AND global_position > {position}))"


def touched_keys(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    after: Checkpoint,
    until: Checkpoint,
    *,
    upcasters: Upcasters | None = None,
) -> pa.Table:
    """The keys whose rows may change through the events in ``(after, until]`` (Arrow table of the key columns).

    For a projection keyed by stream: the streams with a consumed event in the range. Otherwise the
    keys the range's streams contributed to with the events up to ``after`` (rows they may leave)
    and up to ``until`` (rows they may join).
    """
    run = _Run(con, projection, events, upcasters)
    in_range = f"{_later_than(after)} AND NOT {_later_than(until)}"
    streams = f"SELECT DISTINCT stream_id FROM ({run.consumed}) AS e WHERE {in_range}"
    types = {c.name: c.type for c in projection.columns}
    if projection.keyed_by_stream:
        name = projection.key[0]
        return con.sql(
            f"SELECT CAST(stream_id AS {types[name]}) AS {name} FROM ({streams}) AS s ORDER BY 1"
        ).to_arrow_table()
    touched = con.sql(streams).to_arrow_table()
    with run.registered(touched) as touched_view:
        keys: list[pa.Table] = []
        for bound in (after, until):
            base = (
                f"SELECT * FROM ({run.restricted(f'SELECT stream_id FROM {touched_view}')}) AS e "
                f"WHERE NOT {_later_than(bound)}"
            )
            keys.append(run.contributions(base))
    key_columns = ", ".join(f"CAST({k} AS {types[k]}) AS {k}" for k in projection.key)
    with run.registered(keys[0]) as before, run.registered(keys[1]) as now:
        return con.sql(
            f"SELECT DISTINCT {key_columns} FROM (SELECT * FROM {before} UNION ALL BY NAME SELECT * FROM {now}) AS k "
            f"ORDER BY ALL"
        ).to_arrow_table()


def _lazy_frame(con: duckdb.DuckDBPyConnection, query: str) -> pl.LazyFrame:
    """The rows of ``query`` as a polars LazyFrame, fetched by DuckDB first.

    DuckDB's own lazy hand-over (``.pl(lazy=True)``) lets polars' thread pool pull from the DuckDB
    connection while it is collected; with polars 1.44 that deadlocked in the incremental tests.
    Fetching to Arrow first (zero-copy into polars) has no such coupling.
    """
    return con.sql(query).pl().lazy()
