"""``projectionist streams``: the longest streams and the finished ones (archiving candidates)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

import click

from eventstore.errors import ConfigurationError
from pipelines.cli.base import cli, fail_cleanly, settings
from pipelines.cli.lake import read_only_lake

if TYPE_CHECKING:
    from warehouse.stream_health import StreamRow

__all__ = ["streams_command"]

_HEADERS = ["stream_id", "stream_type", "events", "first_event_at", "last_event_at", "age", "last_event_type"]


def _age(age: timedelta) -> str:
    days = age.total_seconds() / 86400
    return f"{days:,.1f} d" if days >= 1 else f"{age.total_seconds() / 3600:,.1f} h"


def _table(rows: list[StreamRow]) -> str:
    from warehouse.query import QueryResult, format_table

    return format_table(
        QueryResult(
            _HEADERS,
            [
                (
                    r.stream_id,
                    r.stream_type,
                    r.events,
                    r.first_event_at.isoformat(timespec="seconds"),
                    r.last_event_at.isoformat(timespec="seconds"),
                    _age(r.age),
                    r.last_event_type,
                )
                for r in rows
            ],
        )
    )


@cli.command("streams")
@click.option("--limit", default=10, show_default=True, help="How many streams to list in each part.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@fail_cleanly
def streams_command(limit: int, as_json: bool) -> None:
    """List the longest streams and the finished ones (candidates for archiving), from analytics.stream_stats.

    A stream is finished when its last event closes it (PROJECTIONIST_CLOSING_EVENT_TYPES, or the projections'
    CLOSING_EVENT_TYPES: CartConfirmed/CartCancelled for the demo shop); long-lived when its first and last
    events lie more than PROJECTIONIST_LONG_STREAM_DAYS apart.
    """
    from warehouse.stream_health import closing_event_types, stream_health

    if limit < 1:
        raise ConfigurationError(f"--limit {limit} must be at least 1")
    current = settings()
    closing = closing_event_types(current)
    con = read_only_lake()
    try:
        health = stream_health(con, closing, long_stream_days=current.long_stream_days, limit=limit)
    finally:
        con.close()
    if as_json:
        report = {
            "streams": health.streams,
            "long": health.long,
            "long_lived": health.long_lived,
            "long_stream_days": health.long_stream_days,
            "thresholds": health.thresholds,
            "closing_events": {kind: sorted(types) for kind, types in sorted(health.closing.items())},
            "finished": health.finished,
            "longest": [r.as_json() for r in health.longest],
            "candidates": [r.as_json() for r in health.candidates],
        }
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"{health.streams:,} streams: {health.long:,} long (analytics.stream_stats.is_long), {health.long_lived:,} "
        f"lived longer than {health.long_stream_days:g} days (PROJECTIONIST_LONG_STREAM_DAYS)"
    )
    click.echo(f"\nlongest streams (first {len(health.longest)}):")
    click.echo(_table(health.longest))
    if not health.closing:
        click.echo(
            "\nno closing event types configured: set PROJECTIONIST_CLOSING_EVENT_TYPES (e.g. "
            "cart:CartConfirmed,CartCancelled) or declare CLOSING_EVENT_TYPES in a projection module"
        )
        return
    closes = "; ".join(f"{kind}: {', '.join(sorted(types))}" for kind, types in sorted(health.closing.items()))
    click.echo(
        f"\narchiving candidates: {health.finished:,} finished streams (last event closes them: {closes}); "
        f"oldest {len(health.candidates)}:"
    )
    if health.candidates:
        click.echo(_table(health.candidates))
