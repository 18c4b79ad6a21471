"""Poison events: what makes an event poison, finding and naming such events, and escalating the checks.

An event is *poison* when a projection cannot use it (see the package docstring). The checks are
SQL over the consumed events, cheapest first (:data:`CHECKS`): the single pass only raises at the
first poison event, the exact checks name each one with its reason. :func:`escalate` is the one
place that decides which check runs next: a caller (``compute``, a rebuild's chunk in the
warehouse) hands it one attempt, run in a transaction of its own, and it tries each check in turn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, TypeVar

import duckdb

from eventstore.quoting import quote_literal
from projections.definition import Projection, normalize_type
from projections.engine.run import Run
from projections.errors import PoisonEventError, ProjectionDefinitionError
from projections.upcasting import Upcasters, json_pointer

__all__ = [
    "CHECKS",
    "DATA_ERRORS",
    "Check",
    "FoldRowsError",
    "PoisonEvent",
    "PolarsBodyError",
    "escalate",
    "find_poison",
    "first_poison_error",
    "guarded_sql",
    "poison_besides",
    "poison_events",
    "poison_stop_error",
    "valid_events",
]

T = TypeVar("T")
_INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
_NUMBER_TYPES = {"FLOAT", "DOUBLE"}


class FoldRowsError(ProjectionDefinitionError):
    """Raised when a fold's rows hold a value its column's type cannot take (perhaps an event's overflowing field)."""


class PolarsBodyError(ProjectionDefinitionError):
    """A polars body (or ``stream_keys``) failed on the events; polars' own error is the cause.

    Raised by :func:`polars_body`, so that polars is imported only where a polars body runs: every
    command that lists the projections imports this module, and ``import polars`` costs 0.3 s.
    """


@contextlib.contextmanager
def polars_body(projection: Projection) -> Iterator[None]:
    """Run ``projection``'s polars code: polars is imported now, its errors come out as :class:`PolarsBodyError`."""
    import polars as pl

    try:
        yield
    except pl.exceptions.PolarsError as exc:
        raise PolarsBodyError(f"{projection.label}: polars failed: {exc}") from exc


# What a value overflowing its declared type raises, in DuckDB (casts, json_transform), polars (as
# PolarsBodyError), or the Arrow conversion of a fold's rows (a Decimal of 400 digits from 1e400).
_CONVERSION_ERRORS = (
    duckdb.ConversionException,
    duckdb.OutOfRangeException,
    duckdb.InvalidInputException,
    PolarsBodyError,
    FoldRowsError,
)
#: What a computation raises when an event's data cannot be used (a poison event in the single pass,
#: a value overflowing its type): the next, more thorough check of ``CHECKS`` names the event.
DATA_ERRORS = _CONVERSION_ERRORS

Check: TypeAlias = Literal["single_pass", "two_pass", "precise"]
#: The poison checks of a computation, cheapest first (see the package docstring).
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
    normalized = normalize_type(type_)
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


def _checked_sql(
    projection: Projection, base: str, versions: Mapping[str, int], precise: bool = False, root: bool = True
) -> str:
    """``base`` plus ``_ok`` (the event can be projected) and the columns ``_poison_reason`` needs.

    ``versions`` are the highest known versions of the consumed types (:func:`~projections.engine.run.known_versions`):
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
        paths = ", ".join(["''"] * root + [json_pointer(name) for name in fields])
        types.append(f"WHEN {quote_literal(event_type)} THEN {caught}(json_type(data, [{paths}]))")
        checks = []
        cast_paths = []
        for i, (name, type_) in enumerate(fields.items(), start=first):
            kinds, cast = _json_kinds(type_, precise)
            checks.append(f"_t[{i}] IN {kinds}" if kinds else f"_t[{i}] IS NOT NULL AND _t[{i}] <> 'NULL'")
            if cast:
                cast_paths.append(json_pointer(name))
                checks.append(f"TRY_CAST(_s[{len(cast_paths)}] AS {normalize_type(type_)}) IS NOT NULL")
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
            normalized = normalize_type(type_)
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


def guarded_sql(projection: Projection, base: str, versions: Mapping[str, int], precise: bool = False) -> str:
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


def poison_events(run: Run, base: str, precise: bool = False) -> list[PoisonEvent]:
    """The events of ``base`` (consumed events of ``run``) failing the declared fields, in reading order."""
    checked = _checked_sql(run.projection, base, run.versions, precise)
    # Counting through an aggregate FILTER first: a WHERE on _ok would be pushed down into the
    # projection and re-parse the JSON once per reference to _t (four times slower, measured).
    found = run.con.sql(f"SELECT count(*) FILTER (WHERE NOT _ok) FROM ({checked}) AS checked").fetchone()
    if found is None or found[0] == 0:
        return []
    rows = run.con.sql(
        f"SELECT event_id::VARCHAR, global_position, transaction_id, stream_id, event_type, event_version, "
        f"{_poison_reason(run.projection, run.versions, precise)} FROM ({checked}) AS checked WHERE NOT _ok "
        "ORDER BY transaction_id, global_position"
    ).fetchall()
    return [PoisonEvent(*row) for row in rows]


def valid_events(run: Run, base: str, poison: Sequence[PoisonEvent], precise: bool = False) -> str:
    """SQL: the events of ``base`` without ``poison`` (found by :func:`poison_events` with the same ``precise``)."""
    return _valid_sql(_checked_sql(run.projection, base, run.versions, precise)) if poison else base


def find_poison(
    con: duckdb.DuckDBPyConnection, projection: Projection, events: str, *, upcasters: Upcasters | None = None
) -> list[PoisonEvent]:
    """The events of ``events`` failing ``projection``'s declared fields, in reading order (reads only)."""
    run = Run(con, projection, events, upcasters)
    return poison_events(run, run.consumed, precise=True)


def poison_stop_error(projection: Projection, poison: Sequence[PoisonEvent]) -> PoisonEventError:
    """The error of policy ``stop``: names the first poison event and counts the others."""
    first = poison[0]
    return PoisonEventError(projection.label, first.event_id, first.global_position, first.reason, len(poison) - 1)


def escalate(attempt: Callable[[Check], T], *, after: Check | None = None) -> T:
    """``attempt(check)`` with each check of :data:`CHECKS`, cheapest first, until one gets through the data.

    ``attempt`` computes with ``check`` (``compute_into(..., check=check)``, say) and must leave no
    trace when it raises: a failed statement aborts a DuckDB transaction, so a caller writing a
    table runs each attempt in a transaction of its own. ``after``: a check the caller already ran
    on the same events, which failed on their data; escalation starts at the next one.
    """
    checks = CHECKS[CHECKS.index(after) + 1 :] if after is not None else CHECKS
    for check in checks:
        try:
            return attempt(check)
        except DATA_ERRORS:
            # single_pass: some event is poison (or a value overflows); two_pass names poison events;
            # perhaps a value of the right JSON kind overflows its type: the precise check finds and
            # reports such events; if it finds none, its attempt fails the same way and says why.
            if check == checks[-1]:
                raise
    raise AssertionError("unreachable")


def first_poison_error(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    error: PoisonEventError,
    *,
    upcasters: Upcasters | None = None,
) -> PoisonEventError:
    """The error naming the first poison event of all ``events``, where ``error`` names the first of a part of them.

    (A rebuild's chunk only knows its own.) ``error`` itself when the declared fields find no
    poison: a fold's ``evolve`` raised, and the part's first is all there is to say.
    """
    poison = find_poison(con, projection, events, upcasters=upcasters)
    if not poison:
        return error
    return poison_stop_error(projection, poison)


def poison_besides(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    known: Sequence[PoisonEvent],
    *,
    upcasters: Upcasters | None = None,
    policy: Literal["skip", "stop"],
) -> list[PoisonEvent]:
    """The poison events of ``events`` not in ``known``; with policy ``stop``, an error naming the first of them."""
    reported = {p.event_id for p in known}
    stray = [p for p in find_poison(con, projection, events, upcasters=upcasters) if p.event_id not in reported]
    if stray and policy == "stop":
        raise poison_stop_error(projection, stray)
    return stray
