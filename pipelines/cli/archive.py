"""``projectionist archive``: finished streams to the lake's cold tier; with ``--in-store``, archived in the store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from eventstore.errors import ConfigurationError
from pipelines.cli.base import cli, fail_cleanly, settings

if TYPE_CHECKING:
    from warehouse.archive import ArchiveRun, StoreArchiveRun

__all__ = ["archive_command"]

#: Stream ids a text report lists before "… and N more" (--json lists them all).
LISTED = 20


@cli.command("archive")
@click.option(
    "--older-than",
    default="30d",
    show_default=True,
    help="Only streams whose last event is older than this (e.g. 30d, 12h, 0s).",
)
@click.option("--in-store", is_flag=True, help="Archive in the event store the streams the lake's cold tier holds.")
@click.option("--delete", is_flag=True, help="With --in-store, native store only: delete rows instead of moving them.")
@click.option("--dry-run", is_flag=True, help="Say what would be archived; change nothing.")
@click.option("--yes", is_flag=True, help="With --in-store: confirm changing the event store.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
@fail_cleanly
def archive_command(older_than: str, in_store: bool, delete: bool, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Move the lake events of finished streams to archive.events (verified); --in-store archives them in the store.

    A stream is finished when its last event is a closing type of its stream type (the projection modules'
    CLOSING_EVENT_TYPES, or PROJECTIONIST_CLOSING_EVENT_TYPES). raw.all_events reads both tiers.
    """
    from eventstore.adapters import open_reader
    from eventstore.connection import event_store_dsn
    from warehouse.archive import archive_in_store, archive_lake, parse_duration
    from warehouse.lake import LakeConfig, open_lake

    if delete and not in_store:
        raise ConfigurationError("--delete applies to --in-store only: add --in-store, or leave --delete out.")
    parse_duration(older_than)  # a bad duration fails before anything is opened
    current = settings()
    if in_store:
        if not yes and not dry_run:
            raise ConfigurationError(
                "archive --in-store changes the event store: see what it would change with --dry-run, then run it "
                "with --yes. Nothing was changed."
            )
        adapter = open_reader(current, event_store_dsn(current))
        try:
            con = open_lake(LakeConfig.from_settings(current), read_only=dry_run)
            try:
                store_run = archive_in_store(con, adapter, delete=delete, dry_run=dry_run)
            finally:
                con.close()
        finally:
            adapter.close()
        _report_store(store_run, as_json)
        return
    con = open_lake(LakeConfig.from_settings(current), read_only=dry_run)
    try:
        run = archive_lake(con, older_than, dry_run=dry_run)
    finally:
        con.close()
    _report_lake(run, as_json)


def _report_lake(run: ArchiveRun, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(run.as_dict(), indent=2))
        return
    closing = "; ".join(f"{kind}: {', '.join(types)}" for kind, types in sorted(run.closing.items()))
    what = (
        f"{run.streams:,} finished stream{'' if run.streams == 1 else 's'} ({run.events:,} events) "
        f"last recorded before {run.cutoff:%Y-%m-%d %H:%M:%S} UTC"
    )
    if run.dry_run:
        click.echo(f"dry run: would move {what} to archive.events (closing: {closing}); nothing was changed")
    elif run.streams == 0:
        click.echo(f"nothing to archive: no {what.split(' ', 1)[1]} (closing: {closing})")
    else:
        click.echo(
            f"archived {what} to archive.events: counts and checksums verified per stream (checksum "
            f"{run.checksum}); raw.all_events reads both tiers"
        )


def _report_store(run: StoreArchiveRun, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(run.as_dict(), indent=2))
        return
    streams = len(run.streams)
    what = f"{streams:,} stream{'' if streams == 1 else 's'} ({run.events:,} events, {run.kind}: {run.action})"
    if not streams and not run.skipped:
        click.echo(
            "nothing to archive in the store: no stream of the lake's cold tier waits for it "
            "(`projectionist archive` moves finished streams there first)"
        )
    elif not streams:
        click.echo(f"nothing archived in the store: {len(run.skipped):,} stream(s) skipped")
    elif run.dry_run:
        click.echo(f"dry run: would archive {what} in the store; nothing was changed")
    else:
        click.echo(f"archived {what} in the store")
    for stream_id in run.streams[:LISTED]:
        click.echo(f"  {stream_id}")
    if streams > LISTED:
        click.echo(f"  … and {streams - LISTED:,} more (--json lists them all)")
    for stream_id, why in list(run.skipped.items())[:LISTED]:
        click.echo(f"skipped {stream_id}: {why}")
    if len(run.skipped) > LISTED:
        click.echo(f"skipped {len(run.skipped) - LISTED:,} more (--json lists them all)")
