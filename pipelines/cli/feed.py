"""``projectionist feed`` (consumers, their lag and dead letters; add, remove, reset) and ``projectionist deliver``.

Heavy imports (DuckDB, the lake, the feeds) happen inside the commands, so listing the CLI stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pipelines.cli.base import cli, fail_cleanly, settings

__all__ = ["deliver_command", "feed_group"]


def _lake() -> Any:
    from warehouse.lake import LakeConfig, open_lake

    return open_lake(LakeConfig.from_settings(settings()))


def _lag(con: Any, consumer: Any) -> tuple[int | None, int]:
    """The source's live version now and the events its checkpoint is ahead of the consumer's."""
    from warehouse.feeds.changes import current_snapshot, live_at

    live = live_at(con, consumer.source, current_snapshot(con))
    if live is None:
        return None, 0
    cp = consumer.checkpoint
    row = con.execute(
        "SELECT count(*) FROM raw.all_events WHERE (transaction_id, global_position) > (?, ?) "
        "AND (transaction_id, global_position) <= (?, ?)",
        [cp.transaction_id, cp.global_position, live[1].transaction_id, live[1].global_position],
    ).fetchone()
    return live[0], int(row[0]) if row else 0


@cli.group("feed", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the consumers and dead letters as JSON.")
@click.pass_context
@fail_cleanly
def feed_group(ctx: click.Context, as_json: bool) -> None:
    """List the feed consumers: what each receives, its cursor, its lag and its dead letters (docs/integration.md)."""
    if ctx.invoked_subcommand is not None:
        return
    from warehouse.feeds import dead_letters, list_consumers
    from warehouse.feeds.consumers import display_target

    con = _lake()
    try:
        consumers = list_consumers(con)
        rows = []
        for consumer in consumers:
            live, lag = _lag(con, consumer)
            letters = dead_letters(con, consumer.name)
            rows.append((consumer, live, lag, letters))
    finally:
        con.close()
    if as_json:
        out = [
            {
                **c.as_json(),
                "live_version": live,
                "lag_events": lag,
                "dead_letters": [
                    {
                        "batch_key": d.batch_key,
                        "changes": d.changes,
                        "attempts": d.attempts,
                        "error": d.error,
                        "from_snapshot": d.from_snapshot,
                        "to_snapshot": d.to_snapshot,
                        "dead_lettered_at": d.dead_lettered_at.isoformat(),
                    }
                    for d in letters
                ],
            }
            for c, live, lag, letters in rows
        ]
        click.echo(json.dumps(out, indent=2))
        return
    if not rows:
        click.echo("no feed consumers: `projectionist feed add NAME --kind outbox|webhook|parquet ...` declares one")
        return
    click.echo(
        f"{'consumer':<16} {'kind':<8} {'source':<16} {'snapshot':>8} {'checkpoint':<16} {'lag':>7} "
        f"{'delivered':>10} {'dead':>5}  target"
    )
    for c, live, lag, letters in rows:
        switch = f" (v{c.version} -> v{live} pending)" if live is not None and c.version not in (None, live) else ""
        click.echo(
            f"{c.name:<16} {c.kind:<8} {c.source:<16} {c.snapshot:>8} {c.checkpoint!s:<16} {lag:>7,} "
            f"{c.delivered:>10,} {len(letters):>5}  {display_target(c)}{switch}"
        )
    for c, _, _, letters in rows:
        for d in letters:
            click.echo(
                f"dead letter of {c.name}: batch {d.batch_key} ({d.changes} changes, snapshots {d.from_snapshot}.."
                f"{d.to_snapshot}) after {d.attempts} attempts at {d.dead_lettered_at:%Y-%m-%d %H:%M:%S}: {d.error}"
            )


@feed_group.command("add")
@click.argument("name")
@click.option("--kind", required=True, type=click.Choice(["outbox", "webhook", "parquet"]), help="How to deliver.")
@click.option("--source", required=True, help="The projection whose live version's changes it receives.")
@click.option(
    "--target",
    required=True,
    help="outbox: a PostgreSQL DSN (or env:VAR naming one); webhook: an http(s) URL; parquet: a folder or s3://bucket/prefix.",
)
@click.option("--secret-env", help="webhook: the environment variable holding the HMAC-SHA256 signing secret.")
@click.option("--batch-size", default=500, show_default=True, help="Changes per webhook request or Parquet file.")
@click.option("--attempts", default=5, show_default=True, help="webhook: attempts per batch before its dead letter.")
@click.option("--timeout", default=10.0, show_default=True, help="webhook: seconds to wait for each response.")
@click.option("--rate", type=float, help="webhook: at most this many requests per second (default: no limit).")
@fail_cleanly
def feed_add_command(
    name: str,
    kind: str,
    source: str,
    target: str,
    secret_env: str | None,
    batch_size: int,
    attempts: int,
    timeout: float,
    rate: float | None,
) -> None:
    """Declare consumer NAME of a projection's change feed (it starts at the beginning: every row, as inserts)."""
    from pathlib import Path

    from projections import discover
    from warehouse.feeds import Consumer, add_consumer, check_consumer, ensure_outbox, reset_consumer
    from warehouse.feeds.consumers import display_target, resolve_dsn

    if kind == "parquet" and not target.startswith("s3://"):
        target = str(Path(target).expanduser().absolute())
    consumer = Consumer(name, kind, source, target, secret_env, batch_size, attempts, timeout, rate)
    check_consumer(consumer, discover())
    resumed = ensure_outbox(resolve_dsn(target), name, source) if kind == "outbox" else 0
    con = _lake()
    try:
        add_consumer(con, consumer)
        if resumed:
            reset_consumer(con, name, resumed)
    finally:
        con.close()
    start = f"from its cursor in the target, snapshot {resumed}" if resumed else "from the beginning"
    click.echo(f"feed consumer {name}: {kind} of {source} to {display_target(consumer)}, {start}")


@feed_group.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm: its cursor and dead letters are forgotten.")
@fail_cleanly
def feed_remove_command(name: str, yes: bool) -> None:
    """Forget consumer NAME, its cursor and its dead letters (an outbox's rows stay in its target)."""
    from warehouse.feeds import get_consumer, remove_consumer

    con = _lake()
    try:
        get_consumer(con, name)
        if not yes:
            click.echo(f"error: removing {name} forgets its cursor and dead letters: confirm with --yes", err=True)
            raise SystemExit(2)
        remove_consumer(con, name)
    finally:
        con.close()
    click.echo(f"feed consumer {name} removed")


@feed_group.command("reset")
@click.argument("name")
@click.option("--to", "to", metavar="CHECKPOINT", help="Receive the changes since this checkpoint (TX/POSITION).")
@click.option("--beginning", is_flag=True, help="Receive every row again, as inserts.")
@click.option("--yes", is_flag=True, help="Confirm: the consumer receives those changes again.")
@fail_cleanly
def feed_reset_command(name: str, to: str | None, beginning: bool, yes: bool) -> None:
    """Move consumer NAME's cursor back, so that the next `deliver` sends it again what came after."""
    from eventstore.errors import ConfigurationError
    from warehouse.feeds import get_consumer, reset_consumer
    from warehouse.time_travel import snapshot_at_position

    if (to is None) == (not beginning):
        raise ConfigurationError("give one of --to CHECKPOINT or --beginning")
    con = _lake()
    try:
        get_consumer(con, name)
        snapshot = 0 if beginning else snapshot_at_position(con, str(to))[0]
        if not yes:
            where = "the beginning" if beginning else f"checkpoint {to} (lake snapshot {snapshot})"
            click.echo(f"error: resetting {name} to {where} sends its changes again: confirm with --yes", err=True)
            raise SystemExit(2)
        consumer = reset_consumer(con, name, snapshot)
    finally:
        con.close()
    click.echo(f"feed consumer {name} reset to snapshot {consumer.snapshot} (checkpoint {consumer.checkpoint})")


@cli.command("deliver")
@click.option("--consumer", "name", help="Deliver to this consumer only (default: every consumer).")
@click.option("--dry-run", is_flag=True, help="Say what each consumer would receive; send nothing.")
@fail_cleanly
def deliver_command(name: str | None, dry_run: bool) -> None:
    """One delivery pass: each consumer receives the changes of its projection since its cursor."""
    from projections import discover
    from warehouse.feeds import deliver

    con = _lake()
    try:
        results = deliver(con, discover(), name, dry_run=dry_run)
    finally:
        con.close()
    if not results:
        click.echo("no feed consumers: `projectionist feed add` declares one")
    for result in results:
        click.echo(result.describe())
