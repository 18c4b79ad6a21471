"""Keys: the rows a set of keys stands for, the keys each stream contributes to, the keys a range of events touches."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.positions import Checkpoint
from projections.definition import Polars, Projection, Sql
from projections.engine.poison import DATA_ERRORS, poison_events, polars_body, valid_events
from projections.engine.run import Run, lazy_frame
from projections.upcasting import Upcasters

if TYPE_CHECKING:
    import pyarrow as pa  # imported where a key table is built: a SQL rebuild never loads it

__all__ = [
    "Keys",
    "contributions",
    "key_join",
    "key_table",
    "keys_in",
    "keys_of_streams",
    "stream_contributions",
    "touched_keys",
    "touched_streams",
]

Keys: TypeAlias = "pa.Table | Sequence[Any]"


def key_table(run: Run, keys: Keys) -> pa.Table:
    """``keys`` as an Arrow table with the key column names."""
    import pyarrow as pa

    names = list(run.projection.key)
    if isinstance(keys, pa.Table):
        missing = [k for k in names if k not in keys.column_names]
        if missing:
            raise ConfigurationError(f"keys for {run.projection.label} lack the key column(s) {missing}")
        return keys.select(names)
    tuples = [k if isinstance(k, tuple) else (k,) for k in keys]
    if any(len(t) != len(names) for t in tuples):
        raise ConfigurationError(f"keys for {run.projection.label} must be values of {names} (tuples if several)")
    return pa.table({n: [t[i] for t in tuples] for i, n in enumerate(names)})


def key_join(run: Run, relation: str, keys: str) -> str:
    """SQL: the rows of ``relation`` whose key is in the relation ``keys``."""
    types = {c.name: c.type for c in run.projection.columns}
    on = " AND ".join(
        f"CAST(r.{k} AS {types[k]}) IS NOT DISTINCT FROM CAST(k.{k} AS {types[k]})" for k in run.projection.key
    )
    return f"SELECT r.* FROM ({relation}) AS r SEMI JOIN {keys} AS k ON {on}"


def _stream_keys(run: Run, valid: str) -> pa.Table:
    """``stream_id`` and the key columns each stream of ``valid`` contributes to."""
    spec = run.projection.stream_keys
    key = ", ".join(run.projection.key)
    if isinstance(spec, Sql):
        query = f"WITH events AS ({valid}) SELECT DISTINCT stream_id, {key} FROM ({spec.query}) AS s"
        return run.con.sql(query).to_arrow_table()
    assert isinstance(spec, Polars)
    with polars_body(run.projection):
        frame = spec.function(lazy_frame(run.con, valid)).lazy()  # a body may return a DataFrame
        return frame.select(["stream_id", *run.projection.key]).unique().collect().to_arrow()


def contributions(run: Run, base: str) -> pa.Table:
    """``stream_keys`` over the valid events of ``base`` (poison left out, whatever the policy)."""
    precise = isinstance(run.projection.stream_keys, Polars)  # see compute's _compute_checked
    try:
        return _stream_keys(run, valid_events(run, base, poison_events(run, base, precise), precise))
    except DATA_ERRORS:  # see poison.escalate
        return _stream_keys(run, valid_events(run, base, poison_events(run, base, precise=True), precise=True))


def keys_of_streams(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    streams: str,
    *,
    upcasters: Upcasters | None = None,
) -> pa.Table:
    """The keys the streams of query ``streams`` (one ``stream_id`` column) contribute to in ``events``."""
    run = Run(con, projection, events, upcasters)
    types = {c.name: c.type for c in projection.columns}
    if projection.keyed_by_stream:
        name = projection.key[0]
        consumed = run.restricted(streams)
        return con.sql(
            f"SELECT DISTINCT CAST(stream_id AS {types[name]}) AS {name} FROM ({consumed}) AS e ORDER BY 1"
        ).to_arrow_table()
    contributed = contributions(run, run.restricted(streams))
    key_columns = ", ".join(f"CAST({k} AS {types[k]}) AS {k}" for k in projection.key)
    with run.registered(contributed) as view:
        return con.sql(f"SELECT DISTINCT {key_columns} FROM {view} ORDER BY ALL").to_arrow_table()


def _later_than(checkpoint: Checkpoint) -> str:
    """SQL: the event comes after ``checkpoint`` in (transaction_id, global_position) order."""
    tx, position = int(checkpoint.transaction_id), int(checkpoint.global_position)
    return f"(transaction_id > {tx} OR (transaction_id = {tx} AND global_position > {position}))"


def touched_streams(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    after: Checkpoint,
    until: Checkpoint,
    *,
    upcasters: Upcasters | None = None,
) -> pa.Table:
    """The streams with an event ``projection`` consumes in ``(after, until]`` of ``events`` (column ``stream_id``)."""
    run = Run(con, projection, events, upcasters)
    in_range = f"{_later_than(after)} AND NOT {_later_than(until)}"
    return con.sql(f"SELECT DISTINCT stream_id FROM ({run.consumed}) AS e WHERE {in_range}").to_arrow_table()


def stream_contributions(
    con: duckdb.DuckDBPyConnection,
    projection: Projection,
    events: str,
    *,
    streams: pa.Table | None = None,
    bound: Checkpoint | None = None,
    upcasters: Upcasters | None = None,
) -> pa.Table:
    """``stream_id`` and the key columns (declared types): the keys each stream contributes to.

    Of every stream of ``events``, or of those in ``streams`` (a ``stream_id`` column); with their
    events up to ``bound`` only, when given. Poison events contribute nothing. For a projection keyed
    by stream, each stream contributes to its own key.
    """
    run = Run(con, projection, events, upcasters)
    types = {c.name: c.type for c in projection.columns}
    key_columns = ", ".join(f"CAST({k} AS {types[k]}) AS {k}" for k in projection.key)
    with contextlib.ExitStack() as stack:
        chosen = None if streams is None else f"SELECT stream_id FROM {stack.enter_context(run.registered(streams))}"
        base = run.restricted(chosen)
        if bound is not None:
            base = f"SELECT * FROM ({base}) AS e WHERE NOT {_later_than(bound)}"
        if projection.keyed_by_stream:
            query = f"SELECT DISTINCT stream_id, CAST(stream_id AS {types[projection.key[0]]}) AS {projection.key[0]} "
            return con.sql(f"{query}FROM ({base}) AS e ORDER BY ALL").to_arrow_table()
        contributed = contributions(run, base)
        view = stack.enter_context(run.registered(contributed))
        return con.sql(f"SELECT DISTINCT stream_id, {key_columns} FROM {view} ORDER BY ALL").to_arrow_table()


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
    touched = touched_streams(con, projection, events, after, until, upcasters=upcasters)
    types = {c.name: c.type for c in projection.columns}
    if projection.keyed_by_stream:
        name = projection.key[0]
        with Run(con, projection, events, upcasters).registered(touched) as view:
            return con.sql(f"SELECT CAST(stream_id AS {types[name]}) AS {name} FROM {view} ORDER BY 1").to_arrow_table()
    before, now = (
        stream_contributions(con, projection, events, streams=touched, bound=bound, upcasters=upcasters)
        for bound in (after, until)
    )
    return keys_in(con, projection, before, now)


def keys_in(con: duckdb.DuckDBPyConnection, projection: Projection, *contributed: pa.Table) -> pa.Table:
    """The distinct keys (ordered) of one or more tables holding the key columns (contributions, say)."""
    names = ", ".join(projection.key)
    relations: list[str] = []
    with contextlib.ExitStack() as stack:
        for table in contributed:
            name = f"projectionist_{uuid.uuid4().hex}"
            con.register(name, table)
            stack.callback(con.unregister, name)
            relations.append(f"SELECT {names} FROM {name}")
        union = " UNION ALL ".join(relations)
        return con.sql(f"SELECT DISTINCT {names} FROM ({union}) AS k ORDER BY ALL").to_arrow_table()
