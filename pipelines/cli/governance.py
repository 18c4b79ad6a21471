"""The governance commands: ``explain`` (a row back to its events) and ``events`` (the event catalog)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from pipelines.cli.base import cli, fail_cleanly, settings

__all__: list[str] = []


@cli.command("explain")
@click.argument("name")
@click.argument("key")
@click.option("--version", "version", type=click.IntRange(1), help="The projection version (default: the live one).")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@fail_cleanly
def explain_command(name: str, key: str, version: int | None, as_json: bool) -> None:
    """The events that built row KEY of projection NAME, in order, and their correlation chain.

    KEY is the row's key; a key of several columns is their values joined by ',' in key order
    (e.g. daily_revenue: 2026-01-15,EUR).
    """
    from projections import discover
    from warehouse.explain import explain, render_explanation
    from warehouse.lake import LakeConfig, open_lake

    con = open_lake(LakeConfig.from_settings(settings()), read_only=True)
    try:
        explanation = explain(con, discover(), name, key, version)
    finally:
        con.close()
    click.echo(explanation.to_json() if as_json else render_explanation(explanation), nl=as_json)


def _date(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=value.tzinfo or UTC)


@cli.command("events")
@click.option(
    "--since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Show what changed in the schema since this date (UTC): new types, versions, fields, JSON types.",
)
@click.option(
    "--unseen-since",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Flag upcast versions no event was written in since this date (UTC) [default: 90 days ago].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the catalog (or the changes, with --since) as JSON.")
@fail_cleanly
def events_command(since: datetime | None, unseen_since: datetime | None, as_json: bool) -> None:
    """The event catalog: per stream type, event type and version, counts, payload fields and flags."""
    from projections import discover
    from warehouse.event_catalog import catalog_entries, refresh_event_catalog, schema_changes
    from warehouse.lake import LakeConfig, open_lake

    idle_before = _date(unseen_since) or datetime.now(UTC) - timedelta(days=90)
    con = open_lake(LakeConfig.from_settings(settings()))
    try:
        refresh_event_catalog(con)
        entries = catalog_entries(con, discover(), idle_before=idle_before)
    finally:
        con.close()
    start = _date(since)
    if start is not None:
        changes = schema_changes(entries, start)
        if as_json:
            click.echo(json.dumps([c.to_dict() for c in changes], indent=2))
            return
        click.echo(f"schema changes since {start:%Y-%m-%d %H:%M} UTC: {len(changes) or 'none'}")
        for change in changes:
            click.echo(f"  {change.describe()}")
        return
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2))
        return
    if not entries:
        click.echo("the lake holds no events yet: run `projectionist ingest`")
        return
    for entry in entries:
        click.echo(
            f"{entry.stream_type or '-'} / {entry.event_type} v{entry.event_version}: {entry.events:,} events, "
            f"{entry.first_seen:%Y-%m-%d %H:%M} .. {entry.last_seen:%Y-%m-%d %H:%M}"
        )
        width = max((len(f.field) for f in entry.fields), default=0)
        for f in entry.fields:
            private = "  private" if f.private else ""
            click.echo(f"    {f.field:<{width}}  {f.json_type:<7} {100 * f.presence:6.2f} %{private}")
        for flag in entry.flags:
            click.echo(f"    ! {flag}")
    flagged = sum(1 for e in entries if e.flags)
    click.echo(f"\n{len(entries)} event types and versions; {flagged} flagged")
