"""The ``projectionist`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from eventstore.connection import connect, describe_dsn, event_store_dsn
from eventstore.errors import ProjectionistError
from eventstore.native import create_schema, table_ref
from eventstore.reader import NativeReader
from eventstore.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _fail_cleanly(func: F) -> F:
    """Print ProjectionistErrors as one line and exit with the error's code, no traceback."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ProjectionistError as exc:
            hint = " (transient: retrying later may help)" if exc.retryable else ""
            click.echo(f"error: {exc}{hint}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), help="Data root [env PROJECTIONIST_HOME; ./.projectionist].")
@click.option("--dsn", help="Event store DSN [env PROJECTIONIST_EVENT_STORE_DSN; unset: embedded PostgreSQL].")
@click.pass_context
@_fail_cleanly
def cli(ctx: click.Context, home: Path | None, dsn: str | None) -> None:
    """Projectionist: rebuildable, versioned projections and analytics from your event store."""
    ctx.obj = Settings.from_env().with_overrides(home=home, event_store_dsn=dsn)


def _settings() -> Settings:
    obj = click.get_current_context().obj
    assert isinstance(obj, Settings)
    return obj


@cli.command()
@_fail_cleanly
def init() -> None:
    """Create the native event store table (idempotent)."""
    settings = _settings()
    dsn = event_store_dsn(settings)
    with connect(dsn) as conn:
        create_schema(conn, settings.store_schema, settings.store_table)
    click.echo(f"event store ready: {settings.store_schema}.{settings.store_table} in {describe_dsn(dsn)}")


@cli.command()
@click.option("--events", "n_events", default=20_000, show_default=True, help="About how many events to append.")
@click.option("--writers", default=4, show_default=True, help="Concurrent writers (commit out of order).")
@click.option("--seed", default=42, show_default=True, help="Seed: the same seed gives the same shop.")
@_fail_cleanly
def demo(n_events: int, writers: int, seed: int) -> None:
    """Append a demo shop and read it back through the gap-safe reader."""
    from eventstore.demo import append_demo_shop, first_stream_id

    settings = _settings()
    dsn = event_store_dsn(settings)
    with connect(dsn) as conn:
        create_schema(conn, settings.store_schema, settings.store_table)
        already = conn.execute(
            f"SELECT 1 FROM {table_ref(settings.store_schema, settings.store_table).as_string(conn)} "
            "WHERE stream_id = %s LIMIT 1",
            (first_stream_id(seed),),
        ).fetchone()
    if already:
        click.echo(f"demo shop with seed {seed} is already in the store; not appending it again")
    else:
        click.echo(f"appending about {n_events:,} shop events with {writers} concurrent writers …")
        result = append_demo_shop(
            dsn,
            events=n_events,
            writers=writers,
            seed=seed,
            schema=settings.store_schema,
            table=settings.store_table,
        )
        click.echo(
            f"appended {result.events:,} events in {result.streams:,} cart streams "
            f"({result.transactions:,} transactions, {result.seconds:.1f} s)"
        )
    with NativeReader(dsn, settings.store_schema, settings.store_table) as reader:
        head = reader.head()
        count = sum(batch.num_rows for batch in reader.read(until=head))
    click.echo(f"read back {count:,} settled events through the gap-safe reader")
    click.echo(f"safe head: transactions below {head.safe_transaction_id}; last event {head.last}")


@cli.command()
@_fail_cleanly
def status() -> None:
    """Show the event store's safe head and size."""
    settings = _settings()
    dsn = event_store_dsn(settings)
    with connect(dsn) as conn:
        create_schema(conn, settings.store_schema, settings.store_table)
        ref = table_ref(settings.store_schema, settings.store_table).as_string(conn)
        row = conn.execute(f"SELECT count(*), count(DISTINCT stream_id) FROM {ref}").fetchone()
    with NativeReader(dsn, settings.store_schema, settings.store_table) as reader:
        head = reader.head()
    assert row is not None
    click.echo(f"event store: {describe_dsn(dsn)}, table {settings.store_schema}.{settings.store_table}")
    click.echo(f"  events:    {row[0]:,} in {row[1]:,} streams")
    click.echo(f"  safe head: transactions below {head.safe_transaction_id}; last settled event {head.last}")
    if head.events_pending:
        click.echo("  in flight: some events belong to transactions still open; they are read once settled")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="projectionist")


if __name__ == "__main__":
    main()
