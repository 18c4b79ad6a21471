"""The fold runner: a :class:`~projections.definition.Fold` body applied per stream, in stream order, in Python.

Each event is decoded and applied apart, so whatever one raises makes it poison; the rows are
handed back as Arrow, typed by inference or, failing that, by their declared types.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from projections.definition import LAST_GLOBAL_POSITION, Event, Fold
from projections.engine.poison import FoldRowsError, PoisonEvent, poison_stop_error
from projections.engine.run import Run
from projections.upcasting import EVENT_COLUMNS

__all__ = ["fold"]

if TYPE_CHECKING:
    import pyarrow as pa

_FOLD_COLUMNS = EVENT_COLUMNS  # a fold sees the columns every projection reads


def fold(run: Run, valid: str, body: Fold, policy: str) -> tuple[pa.Table, list[PoisonEvent]]:
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
    seen = run.seen
    for batch in reader:
        if seen is not None:
            seen(batch.num_rows)
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


def _rows_table(run: Run, rows: list[dict[str, Any]]) -> pa.Table:
    """Fold rows as Arrow, each column typed by inference or, failing that, by its declared type."""
    import pyarrow as pa  # imported by a fold only: a SQL rebuild never loads it

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
                raise FoldRowsError(
                    f"the fold of {run.projection.label} returns values of column {column.name!r} that are not "
                    f"{column.type}: {exc}"
                ) from None
    if not rows:
        return declared.slice(0, 0)
    return pa.table(arrays)
