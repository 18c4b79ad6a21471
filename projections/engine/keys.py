"""Keys: the rows a set of keys stands for, the keys each stream contributes to, the keys a range of events touches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import duckdb
import polars as pl
import pyarrow as pa

from eventstore.errors import ConfigurationError
from eventstore.positions import Checkpoint
from projections.definition import Polars, Projection, Sql
from projections.engine.poison import DATA_ERRORS, poison_events, valid_events
from projections.engine.run import Run, lazy_frame
from projections.upcasting import Upcasters

__all__ = ["Keys", "contributions", "key_join", "key_table", "keys_of_streams", "touched_keys"]

Keys: TypeAlias = pa.Table | Sequence[Any]


def key_table(run: Run, keys: Keys) -> pa.Table:
    """``keys`` as an Arrow table with the key column names."""
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
    frame = spec.function(lazy_frame(run.con, valid))
    collected = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    return collected.select(["stream_id", *run.projection.key]).unique().to_arrow()


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
    run = Run(con, projection, events, upcasters)
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
            keys.append(contributions(run, base))
    key_columns = ", ".join(f"CAST({k} AS {types[k]}) AS {k}" for k in projection.key)
    with run.registered(keys[0]) as before, run.registered(keys[1]) as now:
        return con.sql(
            f"SELECT DISTINCT {key_columns} FROM (SELECT * FROM {before} UNION ALL BY NAME SELECT * FROM {now}) AS k "
            f"ORDER BY ALL"
        ).to_arrow_table()
