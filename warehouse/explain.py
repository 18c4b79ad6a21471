"""Explaining one row of a projection version: the events that built it and their correlation chain.

``explain(con, registry, name, key)`` finds the row of ``projections.<name>_v<N>`` (default: the live
version), the streams its key stands for, and reads from ``raw.all_events`` the consumed events of
those streams up to the version's checkpoint, in the lake's order, each with the payload fields the
projection declares it reads (``requires``, after upcasting: what the body saw). Then the events
sharing their correlation ids, in any stream: what else the same request or process did.

A key maps to streams as in the diff's trails (:mod:`warehouse.diff.projection_versions`): a
projection keyed by stream is its stream (``stream_id = key``), and the stream filter is pushed into
the scan of ``raw.all_events`` before anything is parsed, so a row of a lake of millions of events is
explained by reading its stream's rows. A projection keyed otherwise asks its ``stream_keys`` which
streams contribute to the key: that reads every consumed event once (the price of keys that are not
streams).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.failures import first_line
from eventstore.quoting import quote_literal
from projections import Projection, Registry
from projections.engine.keys import contributions
from projections.engine.run import Run
from projections.registry import did_you_mean
from projections.upcasting import upcast_sql
from warehouse.versions import EVENTS, VersionInfo, list_versions
from warehouse.versions.lake_events import events_until, filtered_view

__all__ = [
    "CHAIN_LIMIT",
    "ExplainedEvent",
    "Explanation",
    "explain",
    "explain_command",
    "format_key",
    "render_explanation",
]

#: At most this many events of the correlation chain are listed (a bulk import may share one id).
CHAIN_LIMIT = 100
#: Several key columns are given as one KEY, their values joined by this separator in key order.
KEY_SEPARATOR = ","


@dataclass(frozen=True)
class ExplainedEvent:
    """One event: where it is, what it is, and the payload fields the projection read from it."""

    global_position: int
    transaction_id: int
    stream_id: str
    stream_version: int
    event_id: str
    event_type: str
    event_version: int
    recorded_at: datetime
    correlation_id: str | None
    causation_id: str | None
    fields: dict[str, Any] = field(default_factory=dict)
    read_as_version: int | None = None  # the version an upcaster lifted it to, when it did
    dead_letter: str | None = None  # why the projection set it aside, when it did

    @property
    def position(self) -> str:
        """``transaction_id/global_position``, as checkpoints are printed."""
        return f"{self.transaction_id}/{self.global_position}"


@dataclass(frozen=True)
class Explanation:
    """A row of a projection version and the events behind it."""

    projection: str
    version: int
    state: str
    table: str
    checkpoint: str
    key: dict[str, Any]
    row: dict[str, Any]
    streams: list[str]
    events: list[ExplainedEvent]
    chain: list[ExplainedEvent]  # other events sharing a correlation id of ``events``
    chain_total: int  # how many there are (``chain`` holds at most CHAIN_LIMIT)

    def to_json(self) -> str:
        """The explanation as JSON (``explain --json``)."""
        return json.dumps(
            {
                **{k: v for k, v in asdict(self).items() if k not in ("events", "chain")},
                "events": [_event_json(e) for e in self.events],
                "chain": [_event_json(e) for e in self.chain],
            },
            indent=2,
            default=str,
        )


def _event_json(event: ExplainedEvent) -> dict[str, Any]:
    return {**asdict(event), "recorded_at": event.recorded_at.isoformat()}


def format_key(values: Sequence[Any]) -> str:
    """The KEY argument of ``projectionist explain`` for a key's values (joined by ``,`` when several)."""
    return KEY_SEPARATOR.join("" if v is None else str(v) for v in values)


def explain_command(name: str, version: int, values: Sequence[Any]) -> str:
    """The ``projectionist explain`` command line for a key of ``name`` v``version`` (quoted for a shell)."""
    key = format_key(values)
    quoted = key if key and all(c.isalnum() or c in "-_.,:" for c in key) else "'" + key.replace("'", "'\\''") + "'"
    return f"projectionist explain {name} {quoted} --version {version}"


def _version(con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int | None) -> VersionInfo:
    """The version to explain (default: the live one), refused with the fix when it cannot be read."""
    built = list_versions(con)
    names = sorted({*registry.names(), *(v.name for v in built)})
    if name not in names:
        raise ConfigurationError(f"unknown projection {name!r}{did_you_mean(name, names)}: known ones are {names}.")
    mine = {v.version: v for v in built if v.name == name}
    readable = sorted(v for v, info in mine.items() if info.state in ("live", "ready", "retired"))
    if version is None:
        live = [v for v, info in mine.items() if info.state == "live"]
        if not live:
            listed = f"built versions: {readable}" if readable else f"none is built: run `projectionist project {name}`"
            raise ConfigurationError(f"{name} has no live version: pass --version N ({listed}).")
        version = live[0]
    info = mine.get(version)
    if info is None or info.state not in ("live", "ready", "retired"):
        state = "not built" if info is None else info.state
        raise ConfigurationError(
            f"{name} v{version} is {state}, so it has no rows to explain: pick one of {readable} or run "
            f"`projectionist rebuild {name} --version {version}`."
        )
    if version not in registry.versions(name):
        raise ConfigurationError(
            f"{name} v{version} is in the lake but no projection module declares it any more, so which events "
            f"it reads is unknown: restore its module (registered versions: {registry.versions(name)})."
        )
    return info


def _key_values(con: duckdb.DuckDBPyConnection, projection: Projection, key: str) -> dict[str, Any]:
    """KEY parsed into the key columns' declared types."""
    names = list(projection.key)
    parts = [key] if len(names) == 1 else key.split(KEY_SEPARATOR)
    if len(parts) != len(names):
        example = KEY_SEPARATOR.join(f"<{n}>" for n in names)
        raise ConfigurationError(
            f"{projection.name} is keyed by {names}: give KEY as {example!r} (values joined by "
            f"{KEY_SEPARATOR!r} in that order), not {key!r}."
        )
    types = {c.name: c.type for c in projection.columns}
    values: dict[str, Any] = {}
    for name, text in zip(names, parts, strict=True):
        try:
            row = con.execute(f"SELECT CAST(? AS {types[name]})", [text]).fetchone()
        except duckdb.Error as exc:
            raise ConfigurationError(
                f"{text!r} is not a value of key column {name} ({types[name]}): {first_line(exc)}"
            ) from exc
        values[name] = row[0] if row else None
    return values


def _row(
    con: duckdb.DuckDBPyConnection, info: VersionInfo, projection: Projection, key: dict[str, Any]
) -> dict[str, Any]:
    where = " AND ".join(f"{k} = ?" for k in key)
    relation = con.execute(f"SELECT * FROM lake.{info.table} WHERE {where}", list(key.values()))
    names = [d[0] for d in relation.description]
    rows = relation.fetchall()
    if not rows:
        sample = con.execute(f"SELECT {', '.join(projection.key)} FROM lake.{info.table} LIMIT 1").fetchone()
        hint = f", e.g. {format_key(sample)!r}" if sample else " (the table is empty)"
        described = ", ".join(f"{k} = '{v}'" for k, v in key.items())
        raise ConfigurationError(
            f"no row of {projection.name} v{info.version} has {described}: {info.table} holds {info.rows:,} rows; "
            f"give a key it holds{hint}."
        )
    return dict(zip(names, rows[0], strict=True))


def _streams(
    con: duckdb.DuckDBPyConnection, registry: Registry, projection: Projection, info: VersionInfo, key: dict[str, Any]
) -> list[str]:
    """The streams whose events built the row of ``key``."""
    if projection.keyed_by_stream:
        return [str(next(iter(key.values())))]
    with events_until(con, info.checkpoint) as events:
        run = Run(con, projection, events, registry.upcasters)
        with run.registered(contributions(run, run.consumed)) as contributed:
            where = " AND ".join(f"{k} = ?" for k in key)
            rows = con.execute(
                f"SELECT DISTINCT stream_id FROM {contributed} WHERE {where} ORDER BY 1", list(key.values())
            ).fetchall()
    return [str(r[0]) for r in rows]


_EVENT_COLUMNS = (
    "global_position, transaction_id, stream_id, stream_version, event_id, event_type, event_version, recorded_at, "
    "correlation_id, causation_id"
)


def _event(row: Sequence[Any]) -> ExplainedEvent:
    return ExplainedEvent(
        global_position=int(row[0]),
        transaction_id=int(row[1]),
        stream_id=str(row[2]),
        stream_version=int(row[3]),
        event_id=str(row[4]),
        event_type=str(row[5]),
        event_version=int(row[6]),
        recorded_at=row[7],
        correlation_id=None if row[8] is None else str(row[8]),
        causation_id=None if row[9] is None else str(row[9]),
    )


def _built_from(
    con: duckdb.DuckDBPyConnection, registry: Registry, projection: Projection, info: VersionInfo, streams: list[str]
) -> list[ExplainedEvent]:
    """The consumed events of ``streams`` up to the version's checkpoint, upcast, in the lake's order."""
    if not streams:
        return []
    tx, position = int(info.checkpoint.transaction_id), int(info.checkpoint.global_position)
    # The stream filter first: it reaches the Parquet scan of raw.events, so only the key's rows are read.
    where = (
        f"stream_id IN ({', '.join(quote_literal(s) for s in streams)}) "
        f"AND transaction_id <= {tx} AND (transaction_id < {tx} OR global_position <= {position})"
    )
    types = ", ".join(quote_literal(t) for t in sorted(projection.consumes))
    # stored_version rides along the upcast untouched (it keeps every column it does not rewrite).
    with_stored = f"(SELECT *, event_version AS stored_version FROM {EVENTS})"
    with filtered_view(con, "explain", with_stored, where) as view:
        upcast = upcast_sql(con, view, registry.upcasters, where=f"event_type IN ({types})")
        rows = con.execute(
            f"SELECT {_EVENT_COLUMNS}, data, stored_version FROM ({upcast}) AS u "
            "ORDER BY transaction_id, global_position"
        ).fetchall()
    poison = _dead_lettered(con, projection.name, info.version, [str(r[4]) for r in rows])
    events = []
    for row in rows:
        read = _event(row)
        stored = int(row[11])
        try:
            data = json.loads(row[10]) if row[10] is not None else None
        except ValueError:
            data = None
        wanted = projection.requires.get(read.event_type, {})
        fields = {f: data.get(f) for f in wanted} if isinstance(data, dict) else {}
        events.append(
            replace(
                read,
                event_version=stored,
                fields=fields,
                read_as_version=read.event_version if read.event_version != stored else None,
                dead_letter=poison.get(read.event_id),
            )
        )
    return events


def _dead_lettered(con: duckdb.DuckDBPyConnection, name: str, version: int, event_ids: list[str]) -> dict[str, str]:
    """Why the version set aside those of ``event_ids`` it dead-lettered (by event id)."""
    if not event_ids:
        return {}
    ids = ", ".join(quote_literal(i) for i in event_ids)
    rows = con.execute(
        f"SELECT event_id, reason FROM meta.dead_letters WHERE projection = ? AND version = ? AND event_id IN ({ids})",
        [name, version],
    ).fetchall()
    return {str(i): str(reason) for i, reason in rows}


def _chain(con: duckdb.DuckDBPyConnection, events: list[ExplainedEvent]) -> tuple[list[ExplainedEvent], int]:
    """The other events sharing a correlation id of ``events`` (any stream, any type), at most CHAIN_LIMIT."""
    correlations = sorted({e.correlation_id for e in events if e.correlation_id})
    if not correlations:
        return [], 0
    listed = ", ".join(quote_literal(e.event_id) for e in events)
    ids = ", ".join(quote_literal(c) for c in correlations)
    where = f"correlation_id IN ({ids}) AND event_id NOT IN ({listed})"
    total_row = con.execute(f"SELECT count(*) FROM {EVENTS} WHERE {where}").fetchone()
    total = int(total_row[0]) if total_row else 0
    rows = con.execute(
        f"SELECT {_EVENT_COLUMNS} FROM {EVENTS} WHERE {where} ORDER BY transaction_id, global_position "
        f"LIMIT {CHAIN_LIMIT}"
    ).fetchall()
    return [_event(r) for r in rows], total


def explain(
    con: duckdb.DuckDBPyConnection, registry: Registry, name: str, key: str, version: int | None = None
) -> Explanation:
    """The row of ``key`` in ``name`` v``version`` (default: live), the events that built it and their chain."""
    info = _version(con, registry, name, version)
    projection = registry.get(name, info.version)
    values = _key_values(con, projection, key)
    row = _row(con, info, projection, values)
    streams = _streams(con, registry, projection, info, values)
    events = _built_from(con, registry, projection, info, streams)
    chain, total = _chain(con, events)
    return Explanation(
        projection=name,
        version=info.version,
        state=info.state,
        table=info.table,
        checkpoint=str(info.checkpoint),
        key=values,
        row=row,
        streams=streams,
        events=events,
        chain=chain,
        chain_total=total,
    )


def render_explanation(explanation: Explanation) -> str:
    """The explanation as text for a terminal."""
    e = explanation
    key = ", ".join(f"{k} = {v}" for k, v in e.key.items())
    out = [f"{e.projection} v{e.version} ({e.state}, {e.table}, checkpoint {e.checkpoint}): {key}"]
    out += [f"  {column}: {value}" for column, value in e.row.items() if column not in e.key]
    positions = [ev.global_position for ev in e.events]
    span = f" (positions {min(positions)}..{max(positions)})" if positions else ""
    out += ["", f"built from {len(e.events)} event(s) of {len(e.streams)} stream(s){span}:"]
    out += [f"  {_event_line(ev, e.events)}" for ev in e.events]
    correlations = sorted({ev.correlation_id for ev in e.events if ev.correlation_id})
    out.append("")
    if not correlations:
        out.append("correlation chain: these events carry no correlation id")
    else:
        shown = "" if e.chain_total <= len(e.chain) else f", the first {len(e.chain)} shown"
        named = ", ".join(correlations[:3]) + (f" and {len(correlations) - 3} more" if len(correlations) > 3 else "")
        out.append(
            f"correlation chain ({named}): {e.chain_total} other event(s) share it{shown}" + (":" if e.chain else "")
        )
        out += [f"  {_event_line(ev, [*e.events, *e.chain])}" for ev in e.chain]
    return "\n".join(out) + "\n"


def _event_line(event: ExplainedEvent, known: list[ExplainedEvent]) -> str:
    version = f"v{event.event_version}" + (f"->v{event.read_as_version}" if event.read_as_version else "")
    fields = " ".join(f"{k}={json.dumps(v)}" for k, v in event.fields.items())
    by_id = {e.event_id: e for e in known}
    cause = by_id.get(event.causation_id or "")
    caused = f"caused by {cause.position}" if cause is not None else f"causation {event.causation_id or '-'}"
    parts = [
        f"{event.position:<14} {event.stream_id} #{event.stream_version} {event.event_type} {version}",
        f"{event.recorded_at:%Y-%m-%d %H:%M:%S}",
        caused,
    ]
    if fields:
        parts.append(fields)
    if event.dead_letter:
        parts.append(f"dead-lettered: {event.dead_letter}")
    return "  ".join(parts)
