"""The backup commands: ``backup`` (the lake's catalog and files, at one instant) and ``restore`` (into a new home)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from pipelines.cli.base import cli, fail_cleanly, settings
from warehouse.units import human_bytes

__all__: list[str] = []


@cli.command("backup")
@click.argument("destination", type=click.Path(path_type=Path, file_okay=False))
@click.option("--dry-run", is_flag=True, help="List what would be copied; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was taken as JSON.")
@fail_cleanly
def backup_command(destination: Path, dry_run: bool, as_json: bool) -> None:
    """Back the lake up into the new folder DESTINATION: its catalog and every file it references, at one instant.

    Writers may keep running. The event store is not included: it is the source of truth, backed up by its owner.
    """
    from warehouse.backup import backup
    from warehouse.lake import LakeConfig

    result = backup(LakeConfig.from_settings(settings()), destination, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
        return
    skipped = (
        f"; {result.skipped_expired:,} files of expired snapshots were already gone" if result.skipped_expired else ""
    )
    if dry_run:
        click.echo(
            f"dry run: would back up snapshot {result.snapshot_id} ({result.snapshot_time}): the catalog and "
            f"{result.files:,} files ({human_bytes(result.bytes)}) into {result.path}{skipped}; nothing was written"
        )
        return
    click.echo(
        f"backed up snapshot {result.snapshot_id} ({result.snapshot_time}) of the lake: the catalog and "
        f"{result.files:,} files ({human_bytes(result.bytes)}) in {result.path} ({result.seconds:.1f} s){skipped}"
    )
    click.echo(f"restore it into a new home with: projectionist --home NEW_HOME restore {result.path}")


@cli.command("restore")
@click.argument("source", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--dry-run", is_flag=True, help="Check the backup and the target; restore nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print what was restored as JSON.")
@fail_cleanly
def restore_command(source: Path, dry_run: bool, as_json: bool) -> None:
    """Restore the backup in SOURCE as this home's lake, whose catalog and data path must be empty."""
    from warehouse.backup import restore
    from warehouse.lake import LakeConfig

    result = restore(LakeConfig.from_settings(settings()), source, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
        return
    if dry_run:
        click.echo(
            f"dry run: would restore snapshot {result.snapshot_id} ({result.files:,} files, "
            f"{human_bytes(result.bytes)}) into {result.catalog}, data {result.data_path}; nothing was changed"
        )
        return
    click.echo(
        f"restored snapshot {result.snapshot_id}: {result.files:,} files ({human_bytes(result.bytes)}) into "
        f"{result.catalog}, data {result.data_path} ({result.seconds:.1f} s)"
    )
