"""What a projection declares: name, version, schema, the events it consumes, and one body.

A body is one of three kinds:

- :class:`Sql`: a DuckDB query over a relation named ``events`` (upcast, validated events);
- :class:`Polars`: a function ``LazyFrame of events -> DataFrame``;
- :class:`Fold`: ``initial()`` then ``evolve(state, event)`` per stream in stream order, for logic
  that reads best as code.

Every body returns one row per key with the declared columns; SQL and polars bodies also return
``last_global_position`` (the fold engine tracks it itself), so that every row can be explained
by the events that built it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import textwrap
import threading
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import duckdb

from projections.errors import ProjectionDefinitionError

if TYPE_CHECKING:
    import polars as pl

__all__ = [
    "LAST_GLOBAL_POSITION",
    "TENANT_ID",
    "Column",
    "Event",
    "ExpectedChange",
    "Fold",
    "PoisonPolicy",
    "Polars",
    "Projection",
    "Sql",
]

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_EVENT_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")

#: The first key column of a per-tenant projection (``Projection(per_tenant=True)``), as in raw.events.
TENANT_ID = "tenant_id"
#: Added to every projection's columns: the global position of the last event applied to the row.
LAST_GLOBAL_POSITION = "last_global_position"

Policy = Literal["skip", "stop"]


class Event(NamedTuple):
    """One upcast event as a fold's ``evolve`` sees it; ``data`` is parsed, numbers with a fraction are Decimal."""

    global_position: int
    transaction_id: int
    stream_id: str
    stream_version: int
    event_id: str
    event_type: str
    event_version: int
    data: dict[str, Any]
    recorded_at: datetime
    correlation_id: str | None
    causation_id: str | None


@dataclass(frozen=True)
class Column:
    """An output column: name, DuckDB type (``VARCHAR``, ``DECIMAL(18,2)``, ...) and what it means.

    ``public=False`` says the column carries a private event field (see :mod:`projections.fields`): it
    stays in the version's table (the operator path) and is left out of the live view ``analytics.<name>``.
    """

    name: str
    type: str
    description: str
    public: bool = True


@dataclass(frozen=True)
class Sql:
    """A DuckDB query over the relation ``events``; it must return the declared columns."""

    query: str


@dataclass(frozen=True)
class Polars:
    """A function from a LazyFrame of events (``data`` as JSON text) to a DataFrame or LazyFrame.

    The events come in no particular order (sorting millions of rows costs more than most bodies):
    sort, or use ``sort_by`` inside aggregations, where order matters.
    """

    function: Callable[[pl.LazyFrame], pl.DataFrame | pl.LazyFrame]


@dataclass(frozen=True)
class Fold:
    """Per stream: ``state = initial()``, then ``state = evolve(state, event)`` for each event in stream order.

    ``result(state)`` turns the final state into the row's columns (key and ``last_global_position``
    are added by the engine); returning None means "no row". Without ``result`` the state itself
    must be a mapping of the columns. ``evolve`` should check an event before changing the state:
    if it raises, the event is poison and the state it leaves behind is the one the next event sees.
    """

    initial: Callable[[], Any]
    evolve: Callable[[Any, Event], Any]
    result: Callable[[Any], Mapping[str, Any] | None] | None = None


Body = Sql | Polars | Fold


@dataclass(frozen=True)
class PoisonPolicy:
    """What to do with an event the body cannot process: ``skip`` (dead-letter it) or ``stop`` (raise).

    ``live`` applies to incremental updates (``compute`` with keys), ``rebuild`` to full computations.
    Both skip by default: no event may block a projection, and each skipped one is a dead letter
    with its reason. ``stop`` is for a projection that must never run without an event.
    """

    live: Policy = "skip"
    rebuild: Policy = "skip"


@dataclass(frozen=True)
class ExpectedChange:
    """A declared change of meaning versus the previous version, for the diff gate of a promotion
    (and any comparison checked with ``warehouse.diff.check_expectation``).

    ``columns`` may differ from the previous version, but only on rows where ``where`` holds: SQL
    over ``a.<column>`` (the previous version's row) and ``b.<column>`` (this version's row with
    the same key). The diff gate checks it as it is (``warehouse.diff.Expectation(changes=[...])``).
    """

    description: str
    columns: tuple[str, ...]
    where: str = "true"


@dataclass(frozen=True, eq=False)
class Projection:
    """One version of one projection: its identity, schema, consumed events and body.

    ``key`` names the key column(s). Without ``stream_keys`` the key is the stream: a single key
    column holding ``stream_id``. Otherwise ``stream_keys`` (SQL over ``events`` or a polars
    function) returns ``stream_id`` plus the key columns each stream contributes to, and the body
    must be decomposable by stream: a key's row depends only on the streams contributing to it.
    ``requires`` declares, per event type, the payload fields the body reads and their DuckDB
    types; events that miss one are poison. ``event_versions`` declares, per consumed event type,
    the highest version the body reads as stored: events of a version no upcaster reaches and no
    projection declares (above it, or below 1) are poison. ``per_tenant`` declares the convention
    of docs/versions.md ("Tenants"): the key starts with ``tenant_id``, which the body takes from
    ``events.tenant_id``; its rows can then be rebuilt, compared and promoted one tenant at a time.
    """

    name: str
    version: int
    description: str
    key: tuple[str, ...]
    consumes: tuple[str, ...]
    columns: tuple[Column, ...]
    body: Body
    requires: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    stream_keys: Sql | Polars | None = None
    poison: PoisonPolicy = PoisonPolicy()
    expected_changes: tuple[ExpectedChange, ...] = ()
    event_versions: Mapping[str, int] = field(default_factory=dict)
    per_tenant: bool = False
    source: str = ""  # the file it was loaded from, set by the registry

    def __post_init__(self) -> None:
        self._check()

    @property
    def kind(self) -> Literal["sql", "polars", "fold"]:
        """``sql``, ``polars`` or ``fold``."""
        if isinstance(self.body, Sql):
            return "sql"
        if isinstance(self.body, Polars):
            return "polars"
        return "fold"

    @property
    def label(self) -> str:
        """``name vN`` and, when known, the file it came from: how errors name it."""
        where = f" ({self.source})" if self.source else ""
        return f"{self.name} v{self.version}{where}"

    @property
    def table_name(self) -> str:
        """The versioned table name, ``<name>_v<N>``."""
        return f"{self.name}_v{self.version}"

    @property
    def output_columns(self) -> tuple[Column, ...]:
        """The declared columns followed by ``last_global_position``."""
        return (
            *self.columns,
            Column(LAST_GLOBAL_POSITION, "BIGINT", "Global position of the last event applied to this row."),
        )

    @property
    def keyed_by_stream(self) -> bool:
        """True when the key is the stream id (no ``stream_keys``)."""
        return self.stream_keys is None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the body's source and the declared schema; changes when either changes."""
        declared: dict[str, Any] = {
            "kind": self.kind,
            "body": _body_source(self.body),
            "stream_keys": _body_source(self.stream_keys) if self.stream_keys is not None else None,
            "key": list(self.key),
            "consumes": sorted(self.consumes),
            "requires": {t: dict(sorted(f.items())) for t, f in sorted(self.requires.items())},
            "columns": [[c.name, normalize_type(c.type)] for c in self.output_columns],
        }
        if self.event_versions:  # only when declared: the fingerprints of projections without it stay as they were
            declared["event_versions"] = dict(sorted(self.event_versions.items()))
        if self.per_tenant:  # likewise
            declared["per_tenant"] = True
        return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()

    def _fail(self, problem: str) -> ProjectionDefinitionError:
        return ProjectionDefinitionError(f"projection {self.name!r} v{self.version}: {problem}")

    def _check(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ProjectionDefinitionError(
                f"projection name {self.name!r} is invalid: use lower snake case (a-z, 0-9, _; starting with a "
                "letter; at most 63 characters), e.g. 'cart_summary'."
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ProjectionDefinitionError(
                f"projection {self.name!r}: version {self.version!r} is invalid: use a positive integer (1, 2, ...)."
            )
        if not isinstance(self.body, Sql | Polars | Fold):
            raise self._fail("body must be Sql(...), Polars(...) or Fold(...)")
        names = [c.name for c in self.columns]
        for column in self.columns:
            if not _COLUMN.match(column.name):
                raise self._fail(f"column name {column.name!r} is invalid: use lower snake case")
            if column.name == LAST_GLOBAL_POSITION:
                raise self._fail(f"do not declare {LAST_GLOBAL_POSITION!r}: every projection gets it")
            if not column.description.strip():
                raise self._fail(f"column {column.name!r} needs a description")
        if len(set(names)) != len(names):
            raise self._fail(f"duplicate column names in {names}")
        if not self.key or any(k not in names for k in self.key):
            raise self._fail(f"key {list(self.key)} must name declared columns ({names})")
        types_of = {c.name: c.type for c in self.columns}
        if not self.consumes or any(not _EVENT_TYPE.match(t) for t in self.consumes):
            raise self._fail(f"consumes must list event type names, got {list(self.consumes)}")
        for event_type, fields in self.requires.items():
            if event_type not in self.consumes:
                raise self._fail(f"requires fields of {event_type!r}, which it does not consume")
            for name in fields:
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                    raise self._fail(f"required field name {name!r} of {event_type!r} is not a plain identifier")
        for event_type, version in self.event_versions.items():
            if event_type not in self.consumes:
                raise self._fail(f"declares the version of {event_type!r}, which it does not consume")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise self._fail(f"version {version!r} of {event_type!r} is invalid: use a positive integer")
        tenant_type = types_of.get(TENANT_ID, "").strip().upper()
        if self.per_tenant and (self.key[0] != TENANT_ID or tenant_type not in ("VARCHAR", "TEXT", "STRING")):
            raise self._fail(
                f"a per-tenant projection's key starts with a {TENANT_ID} VARCHAR column, which its body fills from "
                f"events.{TENANT_ID} (e.g. GROUP BY {TENANT_ID}, ...): declare Column({TENANT_ID!r}, 'VARCHAR', ...) "
                f"and key=({TENANT_ID!r}, ...), with stream_keys returning {TENANT_ID} too"
            )
        if self.stream_keys is None and len(self.key) != 1:
            raise self._fail("a key of several columns needs stream_keys (which keys each stream contributes to)")
        if isinstance(self.body, Fold) and self.stream_keys is not None:
            raise self._fail("a fold is keyed by stream: drop stream_keys")
        if isinstance(self.stream_keys, Sql | Polars) and isinstance(self.body, Sql) != isinstance(
            self.stream_keys, Sql
        ):
            raise self._fail("stream_keys must be of the body's kind (Sql with Sql, Polars with Polars)")
        for change in self.expected_changes:
            unknown = [c for c in change.columns if c not in names]
            if not change.columns or unknown:
                raise self._fail(f"expected change {change.description!r} must name declared columns, not {unknown}")
        for policy in (self.poison.live, self.poison.rebuild):
            if policy not in ("skip", "stop"):
                raise self._fail(f"poison policy {policy!r} is invalid: use 'skip' or 'stop'")
        types_ = {c.name: c.type for c in self.columns}
        types_.update({f"{t}.{n}": ty for t, fs in self.requires.items() for n, ty in fs.items()})
        for where, type_ in types_.items():
            problem = _type_problem(type_)
            if problem:
                raise self._fail(f"type of {where}: {problem}")


_TYPE_CACHE: dict[str, str] = {}
#: One in-memory DuckDB for every spelling asked (a new instance per type cost 20-150 ms, measured).
_TYPE_DB: list[duckdb.DuckDBPyConnection] = []
_TYPE_LOCK = threading.Lock()


def normalize_type(type_: str) -> str:
    """The DuckDB spelling of ``type_`` (``decimal(18, 2)`` -> ``DECIMAL(18,2)``)."""
    cached = _TYPE_CACHE.get(type_)
    if cached is None:
        with _TYPE_LOCK:
            if not _TYPE_DB:
                _TYPE_DB.append(duckdb.connect(":memory:"))
            cached = str(_TYPE_DB[0].sql(f"SELECT CAST(NULL AS {type_}) AS v").types[0])
        _TYPE_CACHE[type_] = cached
    return cached


def _type_problem(type_: str) -> str | None:
    """Why ``type_`` is not a DuckDB type, or None when it is one."""
    if not isinstance(type_, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_ (),]*$", type_):
        return f"{type_!r} is not a DuckDB type name"
    try:
        normalize_type(type_)
    except duckdb.Error as exc:
        return f"{type_!r} is not a DuckDB type ({str(exc).splitlines()[0]})"
    return None


def _body_source(body: Body) -> str:
    if isinstance(body, Sql):
        return " ".join(body.query.split())
    if isinstance(body, Polars):
        return function_source(body.function)
    return "\n".join(function_source(f) if f is not None else "" for f in (body.initial, body.evolve, body.result))


def function_source(function: Callable[..., Any], seen: set[int] | None = None) -> str:
    """The source of ``function`` and of the module-level functions it calls, recursively."""
    seen = set() if seen is None else seen
    if id(function) in seen:
        return ""
    seen.add(id(function))
    if not isinstance(function, types.FunctionType):
        return repr(function)
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        source = repr(function.__code__.co_code) + repr(function.__code__.co_consts)
    parts = [source]
    for name in sorted(_global_names(function.__code__)):
        helper = function.__globals__.get(name)
        if isinstance(helper, types.FunctionType) and helper.__module__ == function.__module__:
            parts.append(function_source(helper, seen))
        elif isinstance(helper, str | int | float | tuple | frozenset):
            parts.append(f"{name} = {helper!r}")
    return "\n".join(p for p in parts if p)


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
