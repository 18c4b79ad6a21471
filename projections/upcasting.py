"""Upcasters: old event versions read as the current one, without rewriting stored events.

An :class:`Upcaster` turns ``(event_type, from_version)`` into ``from_version + 1``; upcasters of
one type chain up to the latest version. The vectorized form is a DuckDB SQL expression over
``data`` (JSON text) giving the new ``data``, so a rebuild upcasts millions of events without
Python touching a row; a plain Python function ``dict -> dict`` is allowed too (it runs as a
DuckDB scalar function, row by row, for the events of its type and version only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
from duckdb.func import ARROW, SPECIAL

from eventstore.errors import ConfigurationError
from eventstore.quoting import quote_literal
from projections.definition import function_source
from projections.errors import ProjectionDefinitionError

__all__ = ["EVENT_COLUMNS", "Upcaster", "Upcasters", "events_source", "upcast_events"]

#: The columns of raw.events a projection reads (others are carried along untouched).
EVENT_COLUMNS = (
    "global_position",
    "transaction_id",
    "stream_id",
    "stream_version",
    "event_id",
    "event_type",
    "event_version",
    "data",
    "recorded_at",
)
#: A table or view name, qualified by up to two dots: what a relation argument may be.
RELATION = re.compile(r'^(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)(?:\.(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)){0,2}$')


@dataclass(frozen=True)
class Upcaster:
    """Reads ``event_type`` at ``from_version`` as ``from_version + 1``: SQL over ``data``, a function, or defaults.

    ``defaults`` (field → JSON value) is the commonest upcast, a field added with a default: each
    field the stored event lacks, or holds as null, reads as its default; every other member is
    kept as stored. It is vectorized like ``sql`` and cheaper than any JSON rewrite: an object that
    lacks all of them only has the fields inserted in front of its text.
    """

    event_type: str
    from_version: int
    sql: str | None = None
    function: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
    description: str = ""
    source: str = ""  # the file it was loaded from, set by the registry
    # A mapping is not hashable: an upcaster hashes by its other fields.
    defaults: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self) -> None:
        where = f"upcaster {self.event_type!r} v{self.from_version}"
        if not isinstance(self.event_type, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.:-]*$", self.event_type):
            raise ProjectionDefinitionError(f"{where}: event type must be a name like 'ItemAdded'")
        if isinstance(self.from_version, bool) or not isinstance(self.from_version, int) or self.from_version < 1:
            raise ProjectionDefinitionError(f"{where}: from_version must be a positive integer")
        if [self.sql, self.function, self.defaults].count(None) != 2:
            raise ProjectionDefinitionError(f"{where}: give exactly one of sql=..., function=... or defaults=...")
        if self.defaults is not None:
            _check_defaults(where, self.defaults)

    @property
    def to_version(self) -> int:
        """The version it produces, ``from_version + 1``."""
        return self.from_version + 1


class Upcasters:
    """The upcasters of all event types, keyed by ``(event_type, from_version)`` and checked to chain."""

    def __init__(self, upcasters: Iterable[Upcaster] = ()) -> None:
        self._by_key: dict[tuple[str, int], Upcaster] = {}
        for upcaster in upcasters:
            key = (upcaster.event_type, upcaster.from_version)
            if key in self._by_key:
                other = self._by_key[key]
                raise ProjectionDefinitionError(
                    f"two upcasters for {key[0]} v{key[1]}: {other.source or '?'} and {upcaster.source or '?'}; "
                    "keep one of them."
                )
            self._by_key[key] = upcaster
        for event_type in {t for t, _ in self._by_key}:
            versions = sorted(v for t, v in self._by_key if t == event_type)
            if versions != list(range(versions[0], versions[-1] + 1)):
                raise ProjectionDefinitionError(
                    f"upcasters of {event_type} do not chain: they start from versions {versions}; add the missing "
                    "ones so every old version reaches the latest."
                )

    def __iter__(self) -> Iterator[Upcaster]:
        return iter(sorted(self._by_key.values(), key=lambda u: (u.event_type, u.from_version)))

    def __len__(self) -> int:
        return len(self._by_key)

    def latest(self, event_type: str) -> int | None:
        """The version events of ``event_type`` are upcast to, or None when it has no upcaster."""
        versions = [v for t, v in self._by_key if t == event_type]
        return max(versions) + 1 if versions else None

    def get(self, event_type: str, from_version: int) -> Upcaster | None:
        """The upcaster of ``event_type`` at ``from_version``, if any."""
        return self._by_key.get((event_type, from_version))

    @property
    def fingerprint(self) -> str:
        """SHA-256 of every upcaster's key and code: changes when what events read as changes."""
        declared = [
            [u.event_type, u.from_version, u.sql, function_source(u.function) if u.function is not None else None]
            + ([_json_text(dict(u.defaults))] if u.defaults is not None else [])
            for u in self
        ]
        return hashlib.sha256(json.dumps(declared).encode()).hexdigest()


def events_source(con: duckdb.DuckDBPyConnection, events: str) -> list[str]:
    """Check that relation ``events`` exists and has the raw.events columns a projection reads; return its columns."""
    if not RELATION.match(events):
        raise ConfigurationError(
            f"events relation {events!r} is not a table or view name (like lake.raw.events or my_events)."
        )
    try:
        columns = con.sql(f"SELECT * FROM {events} LIMIT 0").columns
    except (duckdb.CatalogException, duckdb.BinderException, duckdb.ParserException) as exc:
        # A relation that is not there (or not readable as named) is the caller's to fix. Anything else (the
        # lake's catalog server restarting under `follow`, a file gone) is raised as it is, for the caller to
        # judge: a lost connection is transient, not a configuration error.
        raise ConfigurationError(
            f"events relation {events} cannot be read: {str(exc).splitlines()[0]}. Attach the lake or create it."
        ) from None
    missing = [c for c in EVENT_COLUMNS if c not in columns]
    if missing:
        raise ConfigurationError(
            f"events relation {events} lacks the raw.events column(s) {missing}: it must be shaped like raw.events."
        )
    return list(columns)


def _json_text(value: Any) -> str:
    """``value`` as compact JSON text; a Decimal is written digit for digit (a price stays exact)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return str(value)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("object keys must be strings")
        return "{" + ",".join(f"{json.dumps(k)}:{_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json_text(v) for v in value) + "]"
    if isinstance(value, str | int | float) or value is None:  # bool is an int
        return json.dumps(value, allow_nan=False)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _check_defaults(where: str, defaults: Mapping[str, Any]) -> None:
    if not isinstance(defaults, Mapping) or not defaults:
        raise ProjectionDefinitionError(f"{where}: defaults must be a non-empty mapping of field name to JSON value")

    def has_null(value: Any) -> bool:
        if isinstance(value, Mapping):
            return any(has_null(v) for v in value.values())
        if isinstance(value, list | tuple):
            return any(has_null(v) for v in value)
        return value is None

    for field, value in defaults.items():
        if not isinstance(field, str) or not field:
            raise ProjectionDefinitionError(f"{where}: default field names must be non-empty strings, not {field!r}")
        if has_null(value):
            raise ProjectionDefinitionError(
                f"{where}: the default of {field!r} holds a null; a missing field reads as null already: give a value"
            )
        try:
            _json_text(value)
        except (TypeError, ValueError) as exc:
            raise ProjectionDefinitionError(f"{where}: the default of {field!r} is not a JSON value ({exc})") from None


def json_pointer(field: str) -> str:
    """The JSON pointer (RFC 6901) of top-level member ``field``, as an SQL literal."""
    return quote_literal("/" + field.replace("~", "~0").replace("/", "~1"))


def _defaults_sql(defaults: Mapping[str, Any]) -> str:
    """SQL over ``data``: the object with every field of ``defaults`` it lacks or holds as null set to its default.

    The common case, an object written without whitespace after its brace that lacks every field
    (``{"`` starts its text; one JSON parse tells the rest), takes the fields inserted in front of
    its text. Anything else goes through ``json_merge_patch`` with the fields to set; data that is
    not a JSON object gives NULL (the event cannot be upcast).
    """
    members = [f"{_json_text(field)}:{_json_text(value)}" for field, value in defaults.items()]
    pointers = [json_pointer(field) for field in defaults]
    if len(pointers) == 1:
        lacks_all = f"json_type(data, {pointers[0]}) IS NULL"
    else:
        lacks_all = f"list_aggregate(json_type(data, [{', '.join(pointers)}]), 'count') = 0"
    inserted = f"concat({quote_literal('{' + ','.join(members) + ',')}, substr(data, 2))"
    to_set = ", ".join(
        f"CASE WHEN coalesce(json_type(data, {pointer}), 'NULL') = 'NULL' THEN {quote_literal(member)} END"
        for pointer, member in zip(pointers, members, strict=True)
    )
    merged = f"CAST(json_merge_patch(data, '{{' || concat_ws(',', {to_set}) || '}}') AS VARCHAR)"
    return (
        f"CASE WHEN starts_with(data, '{{\"') AND {lacks_all} THEN {inserted} "
        f"WHEN json_type(data) = 'OBJECT' THEN {merged} END"
    )


_UDF_FUNCTIONS: dict[int, Callable[..., Any]] = {}


def _python_udf(con: duckdb.DuckDBPyConnection, upcaster: Upcaster) -> str:
    """Register ``upcaster.function`` as a scalar function on ``con`` (once) and return its name."""
    assert upcaster.function is not None
    function = upcaster.function
    # Keeping the function referenced keeps its id unique, so the name stands for this function only.
    _UDF_FUNCTIONS[id(function)] = function
    digest = hashlib.sha256(f"{upcaster.event_type}/{upcaster.from_version}/{id(function)}".encode()).hexdigest()
    name = f"projectionist_upcast_{digest[:16]}"

    def one(data: str | None) -> str | None:
        if data is None:
            return None
        try:
            new = function(json.loads(data, parse_float=Decimal))
            # Prices are JSON numbers: write Decimals back as numbers (float repr keeps <= 15 digits exact).
            return json.dumps(dict(new), default=lambda v: float(v) if isinstance(v, Decimal) else str(v))
        except Exception:
            return None  # the event becomes poison ("data is NULL"), reported by the engine

    import pyarrow as pa  # here: only a Python upcaster needs it (0.15 s of a start-up)

    def apply(data: Any) -> Any:  # pyarrow Arrays (DuckDB resolves annotations in this module's globals)
        return pa.array([one(value) for value in data.to_pylist()], pa.string())

    try:
        con.create_function(
            name, apply, [duckdb.sqltype("VARCHAR")], duckdb.sqltype("VARCHAR"), type=ARROW, null_handling=SPECIAL
        )
    except duckdb.Error as exc:
        if "already" not in str(exc):  # registered on this connection by an earlier call
            raise
    return name


def upcast_sql(
    con: duckdb.DuckDBPyConnection,
    events: str,
    upcasters: Upcasters,
    where: str = "",
    columns: list[str] | None = None,
    *,
    catch: bool = True,
) -> str:
    """A query over ``events`` (optionally filtered by ``where``) reading every event at its latest version.

    With ``catch`` (the default) an event an SQL upcaster cannot read stays at its stored version;
    without, the query raises instead (the engine's single pass, which falls back to a checked
    pass on any data error, saves the cost of ``try`` that way).
    """
    columns = columns if columns is not None else events_source(con, events)
    # data becomes JSON text: a relation whose data is VARCHAR (a reader's batch) and one whose data is
    # JSON (the lake) then behave the same, and malformed text can still be reported instead of failing.
    query = f"SELECT * REPLACE (CAST(data AS VARCHAR) AS data) FROM {events}" + (f" WHERE {where}" if where else "")
    if "data" not in columns:  # pragma: no cover - events_source already refused it
        raise ConfigurationError(f"events relation {events} has no data column")
    by_version: dict[int, list[Upcaster]] = {}
    for upcaster in upcasters:
        by_version.setdefault(upcaster.from_version, []).append(upcaster)
    for from_version in sorted(by_version):
        cases: list[str] = []
        for upcaster in by_version[from_version]:
            match = f"event_type = {quote_literal(upcaster.event_type)} AND event_version = {from_version}"
            if upcaster.sql is not None or upcaster.defaults is not None:
                expression = upcaster.sql if upcaster.sql is not None else _defaults_sql(upcaster.defaults or {})
                new = f"CAST(({expression}) AS VARCHAR)"
                new = f"try({new})" if catch else new
            else:
                new = f"{_python_udf(con, upcaster)}(data)"
            cases.append(f"WHEN {match} THEN {new}")
        # An event its upcaster cannot read (malformed data, an error in the expression) stays at its
        # stored version with its stored data; the projection then reports it as poison.
        query = (
            "SELECT * EXCLUDE (upcast) REPLACE (coalesce(upcast, data) AS data, "
            "CAST(CASE WHEN upcast IS NULL THEN event_version ELSE event_version + 1 END AS INTEGER) AS event_version) "
            f"FROM (SELECT *, CASE {' '.join(cases)} END AS upcast FROM ({query}) AS stored) AS stage_{from_version}"
        )
    return query


def upcast_events(
    con: duckdb.DuckDBPyConnection, events: str, upcasters: Upcasters, *, view: str | None = None
) -> duckdb.DuckDBPyRelation:
    """The events of relation ``events`` read at their latest versions (stored rows are not changed).

    With ``view``, also create (or replace) a temporary view of that name on ``con``.
    """
    query = upcast_sql(con, events, upcasters)
    if view is not None:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", view):
            raise ConfigurationError(f"view name {view!r} is not a plain identifier")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS {query}")
    return con.sql(query)
