"""``projectionist report``: one self-contained HTML page of the lake (size, lag, volume, streams, versions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from eventstore.errors import ConfigurationError
from pipelines.cli.base import cli, fail_cleanly, settings
from warehouse.errors import LakeNotCreatedError

if TYPE_CHECKING:
    from warehouse.lake import LakeConfig
    from warehouse.report import Report

__all__ = ["report_command"]


@cli.command("report")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the page here [default: <home>/report.html].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report's data as JSON (the page only with --output).")
@fail_cleanly
def report_command(output: Path | None, as_json: bool) -> None:
    """Write one self-contained HTML page: lake size and growth, lag, event volume, stream lengths, versions.

    It reads the lake attached read-only; nothing is written to the lake or the store.
    """
    from warehouse.lake import LakeConfig
    from warehouse.report_html import render_report

    current = settings()
    config = LakeConfig.from_settings(current)
    report = _read(config)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        if output is None:
            return
    target = output if output is not None else current.home / "report.html"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_report(report), encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the report to {target} ({exc.strerror or exc}): choose another --output."
        ) from exc
    click.echo(str(target), err=as_json)


def _read(config: LakeConfig) -> Report:
    from warehouse.lake import open_lake
    from warehouse.report import build_report, empty_report

    try:
        con = open_lake(config, read_only=True)
    except LakeNotCreatedError:
        return empty_report(config.describe(), config.data_path)
    try:
        return build_report(con, lake=config.describe(), data_path=config.data_path)
    finally:
        con.close()
