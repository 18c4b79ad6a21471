"""Upcasters: old event versions read as the current one, without rewriting stored events.

An :class:`Upcaster` turns ``(event_type, from_version)`` into ``from_version + 1``; upcasters of
one type chain up to the latest version. The vectorized form is a DuckDB SQL expression over
``data`` (JSON text) giving the new ``data``, so a rebuild upcasts millions of events without
Python touching a row; a plain Python function ``dict -> dict`` is allowed too (it runs as a
DuckDB scalar function, row by row, for the events of its type and version only).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
from duckdb.func import ARROW, SPECIAL

from eventstore.errors import ConfigurationError, ProjectionDefinitionError
from projections.definition import _function_source

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
_RELATION = re.compile(r'^(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)(?:\.(?:"[^"]+"|[A-Za-z_][A-Za-z0-9_$]*)){0,2}$')


@dataclass(frozen=True)
class Upcaster:
    """Reads ``event_type`` at ``from_version`` as ``from_version + 1``: SQL over ``data`` or a function."""

    event_type: str
    from_version: int
    sql: str | None = None
    function: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
    description: str = ""
    source: str = ""  # the file it was loaded from, set by the registry

    def __post_init__(self) -> None:
        where = f"upcaster {self.event_type!r} v{self.from_version}"
        if not isinstance(self.event_type, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_.:-]*$", self.event_type):
            raise ProjectionDefinitionError(f"{where}: event type must be a name like 'ItemAdded'")
        if isinstance(self.from_version, bool) or not isinstance(self.from_version, int) or self.from_version < 1:
            raise ProjectionDefinitionError(f"{where}: from_version must be a positive integer")
        if (self.sql is None) == (self.function is None):
            raise ProjectionDefinitionError(f"{where}: give exactly one of sql=... or function=...")

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
            [u.event_type, u.from_version, u.sql, _function_source(u.function) if u.function is not None else None]
            for u in self
        ]
        return hashlib.sha256(json.dumps(declared).encode()).hexdigest()


def events_source(con: duckdb.DuckDBPyConnection, events: str) -> list[str]:
    """Check that relation ``events`` exists and has the raw.events columns a projection reads; return its columns."""
    if not _RELATION.match(events):
        raise ConfigurationError(
            f"events relation {events!r} is not a table or view name (like lake.raw.events or my_events)."
        )
    try:
        columns = con.sql(f"SELECT * FROM {events} LIMIT 0").columns
    except duckdb.Error as exc:
        raise ConfigurationError(
            f"events relation {events} cannot be read: {str(exc).splitlines()[0]}. Attach the lake or create it."
        ) from None
    missing = [c for c in EVENT_COLUMNS if c not in columns]
    if missing:
        raise ConfigurationError(
            f"events relation {events} lacks the raw.events column(s) {missing}: it must be shaped like raw.events."
        )
    return list(columns)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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

    def apply(data: pa.Array) -> pa.Array:
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
            match = f"event_type = {_quote(upcaster.event_type)} AND event_version = {from_version}"
            if upcaster.sql is not None:
                new = f"CAST(({upcaster.sql}) AS VARCHAR)"
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
