"""``projectionist maintain``: expire old lake snapshots, delete the files no snapshot needs, merge small files."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from eventstore.settings import parse_duration
from pipelines.cli.base import cli, fail_cleanly, settings
from warehouse.units import human_bytes

if TYPE_CHECKING:
    import duckdb

    from warehouse.maintenance import LakeSize, Maintenance

__all__ = ["describe_size", "expire_dropped", "maintain_command"]


def describe_size(size: LakeSize) -> str:
    """``12.0 MiB on disk in 40 files, live data 3.1 MiB, reclaimable 8.9 MiB``."""
    if size.disk_bytes is None:
        return f"live data {human_bytes(size.live_bytes)} (object storage: bytes on disk not measured)"
    return (
        f"{human_bytes(size.disk_bytes)} on disk in {size.files:,} files, live data {human_bytes(size.live_bytes)}, "
        f"reclaimable {human_bytes(size.reclaimable_bytes)}"
    )


def echo_maintenance(done: Maintenance, older_than: str) -> None:
    """Print what :func:`~warehouse.maintenance.maintain` did, or would do."""
    would = "would " if done.dry_run else ""
    click.echo(f"before: {describe_size(done.before)}")
    click.echo(
        f"{would}expire {len(done.expired):,} snapshot{'' if len(done.expired) == 1 else 's'} superseded more than "
        f"{older_than} ago (before {done.cutoff.isoformat(timespec='seconds')})"
    )
    for reason in done.pins.reasons:
        click.echo(f"  kept: {reason}")
    click.echo(f"{would}delete {done.files_deleted:,} file{'' if done.files_deleted == 1 else 's'} no snapshot needs")
    if done.dry_run:
        click.echo("would merge the small files of every table; nothing was changed (dry run)")
        return
    click.echo(f"merged the small files of {done.tables_merged} tables")
    click.echo(f"after:  {describe_size(done.after)}")


@cli.command("maintain")
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    help="Expire the snapshots superseded longer ago than this (7d, 12h, 30m, 0s).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be expired and deleted; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@fail_cleanly
def maintain_command(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Expire old lake snapshots, delete the files no snapshot needs, merge small files of every table.

    Time travel reaches back only as far as the snapshots kept. Never expired: the current snapshot,
    those PROJECTIONIST_TIME_TRAVEL_WINDOW needs, those since an unfinished rebuild started.
    """
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.maintenance import maintain

    age = parse_duration(older_than, "--older-than")
    current = settings()
    con = open_lake(LakeConfig.from_settings(current))
    try:
        done = maintain(con, older_than=age, window=current.time_travel_window, dry_run=dry_run)
    finally:
        con.close()
    if as_json:
        click.echo(json.dumps({"older_than_seconds": age.total_seconds(), **done.as_json()}, indent=2))
    else:
        echo_maintenance(done, older_than)


def expire_dropped(con: duckdb.DuckDBPyConnection, older_than: str) -> None:
    """After ``retain`` dropped tables: expire the snapshots older than ``older_than``, delete what no snapshot needs.

    A dropped table's files stay while a snapshot from before the drop is kept (time travel reads them).
    """
    from warehouse.maintenance import maintain

    done = maintain(
        con, older_than=parse_duration(older_than, "--older-than"), window=settings().time_travel_window, merge=False
    )
    freed = (done.before.disk_bytes or 0) - (done.after.disk_bytes or 0)
    click.echo(
        f"expired {len(done.expired):,} snapshots superseded more than {older_than} ago; "
        f"deleted {done.files_deleted:,} files ({human_bytes(freed)}); now {describe_size(done.after)}"
    )
