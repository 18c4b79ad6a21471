"""The governance commands: ``explain`` (a row back to its events) and ``events`` (the event catalog)."""

from __future__ import annotations

import click

from pipelines.cli.base import cli, fail_cleanly, settings
from projections import discover
from warehouse.explain import explain, render_explanation
from warehouse.lake import LakeConfig, open_lake

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
    con = open_lake(LakeConfig.from_settings(settings()), read_only=True)
    try:
        explanation = explain(con, discover(), name, key, version)
    finally:
        con.close()
    click.echo(explanation.to_json() if as_json else render_explanation(explanation), nl=as_json)
