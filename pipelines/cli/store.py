"""The event store commands: ``init``, ``demo`` (the demo shop in a store, the lake and projections)
and ``status`` (the store, the lake and the projections at a glance)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace

import click

from eventstore.errors import ConfigurationError
from eventstore.settings import DEFAULT_LONG_STREAM_THRESHOLD, Settings
from pipelines.cli.base import cli, fail_cleanly, settings
from pipelines.cli.lake import DEFAULT_BATCH_SIZE, ingest_and_report, read_only_lake
from pipelines.cli.maintain import describe_size
from pipelines.cli.versions import demo_projections, echo_projection_status, version_records
from warehouse.units import human_bytes

_NAME_WIDTH = 24


class StoreKind(click.Choice[str]):
    """``click.Choice`` of the registry's store kinds, read when first needed: the registry loads DuckDB and
    psycopg, which ``projectionist --help`` need not (``demo --help`` lists the kinds, so it loads them)."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        from eventstore.adapters import store_kinds

        return store_kinds()

    @choices.setter
    def choices(self, _value: tuple[str, ...]) -> None:
        pass


@cli.command()
@click.option(
    "--notify",
    is_flag=True,
    help="Also create the trigger that NOTIFYs PROJECTIONIST_NOTIFY_CHANNEL on each commit, so `follow` wakes at once.",
)
@fail_cleanly
def init(notify: bool) -> None:
    """Create the native event store table (idempotent); with --notify, its NOTIFY trigger too."""
    from eventstore.connection import connect, describe_dsn, event_store_dsn
    from eventstore.native_store import create_schema

    current = settings()
    dsn = event_store_dsn(current)
    with connect(dsn) as conn:
        create_schema(conn, current.store_schema, current.store_table)
        if notify:
            from eventstore.notify import create_notify_trigger

            create_notify_trigger(conn, current.store_schema, current.store_table, current.notify_channel)
    click.echo(f"event store ready: {current.store_schema}.{current.store_table} in {describe_dsn(dsn)}")
    if notify:
        click.echo(f"inserts into it NOTIFY channel {current.notify_channel}: `follow` wakes on each commit")


@cli.command()
@click.option("--events", "n_events", default=20_000, show_default=True, help="About how many events to append.")
@click.option("--writers", default=4, show_default=True, help="Concurrent writers (commit out of order).")
@click.option("--seed", default=42, show_default=True, help="Seed: the same seed gives the same shop.")
@click.option("--no-ingest", "skip_ingest", is_flag=True, help="Only append and read back; do not touch the lake.")
@click.option(
    "--store",
    "store_kind",
    type=StoreKind(),
    default="native",
    show_default=True,
    help="Write the shop through this store's own writer, into its own demo database and lake.",
)
@fail_cleanly
def demo(n_events: int, writers: int, seed: int, skip_ingest: bool, store_kind: str) -> None:
    """Append a demo shop, read it back gap-safe, ingest it into the lake and query it."""
    from eventstore.adapters.native import NativeReader
    from eventstore.connection import connect, event_store_dsn
    from eventstore.demo import append_demo_shop, first_stream_id
    from eventstore.native_store import create_schema, table_ref

    if store_kind != "native":
        current, dsn = _foreign_demo_store(store_kind, n_events, seed)
        if not skip_ingest:
            ingest_and_report(
                current, dsn, batch_size=DEFAULT_BATCH_SIZE, compact_after=64, threshold=DEFAULT_LONG_STREAM_THRESHOLD
            )
            _demo_queries(current)
        return
    current = settings()
    dsn = event_store_dsn(current)
    with connect(dsn) as conn:
        ref = table_ref(current.store_schema, current.store_table).as_string(conn)
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ref,)).fetchone()
        if not (found and found[0]):
            # The demo's own store: created like `init` does, only when missing. Its DDL takes locks that
            # writers would queue behind, so an existing table is never touched (reading never writes).
            create_schema(conn, current.store_schema, current.store_table)
        already = conn.execute(
            f"SELECT 1 FROM {table_ref(current.store_schema, current.store_table).as_string(conn)} "
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
            schema=current.store_schema,
            table=current.store_table,
        )
        click.echo(
            f"appended {result.events:,} events in {result.streams:,} cart streams "
            f"({result.transactions:,} transactions, {result.out_of_order_commits:,} of them committed after "
            f"later positions; {result.seconds:.1f} s)"
        )
    with NativeReader(dsn, current.store_schema, current.store_table) as reader:
        head = reader.head()
        count = sum(batch.num_rows for batch in reader.read(until=head))
    click.echo(f"read back {count:,} settled events through the gap-safe reader")
    click.echo(f"safe head: transactions below {head.bound}; last event {head.last}")
    if not skip_ingest:
        ingest_and_report(
            current, dsn, batch_size=DEFAULT_BATCH_SIZE, compact_after=64, threshold=DEFAULT_LONG_STREAM_THRESHOLD
        )
        _demo_queries(current)
        demo_projections()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@fail_cleanly
def status(as_json: bool) -> None:
    """Show the event store's safe head and size, and the lake's checkpoint, lag and tables."""
    from concurrent.futures import ThreadPoolExecutor

    from eventstore.connection import describe_dsn, event_store_dsn
    from eventstore.positions import START
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.maintenance import lake_size
    from warehouse.sources import close_source, open_source
    from warehouse.status import lake_status

    current = settings()
    dsn = event_store_dsn(current)
    with contextlib.ExitStack() as closing:
        source = open_source(current, dsn)  # checks the store's tables (no DDL: reading never writes)
        closing.callback(close_source, source)
        # A native table's events and streams: one scan of it, on a connection of its own, while the lake opens
        # and is read (0.13 s of each on 1.2 M events, measured: the command took their sum before).
        counting = closing.enter_context(ThreadPoolExecutor(max_workers=1)).submit(_native_counts, current, dsn)
        config = LakeConfig.from_settings(current)
        con = open_lake(config)  # one attach for the whole command: attaching costs 250-500 ms
        closing.callback(con.close)
        state = lake_status(con, source)
        on_disk = lake_size(con)
        counted = counting.result()
        # Another kind's events (streams are counted for the native table only, on its own column).
        total, stream_count = counted if counted is not None else (source.pending(START)[0], None)
        head = state.head
        if as_json:
            report = {
                "event_store": {
                    "database": describe_dsn(dsn),
                    "source": source.name,
                    "events": total,
                    "streams": stream_count,
                    "safe_head": {
                        "bound": head.bound,
                        "bound_kind": getattr(source, "bound_kind", "transaction_id"),
                        "last": str(head.last),
                        "events_pending": head.events_pending,
                    },
                    "held_back_by": state.holder.describe() if state.holder is not None else None,
                },
                "lake": {
                    "catalog": config.describe(),
                    "holds": str(state.store) if state.store else None,
                    "checkpoint": str(state.checkpoint),
                    "events": state.events,
                    "snapshot": state.snapshot,
                    "lag_events": state.lag_events,
                    "lag_seconds": state.lag_seconds,
                    "size": on_disk.as_json(),
                    "tables": {
                        name: {"files": files, "bytes": size} for name, (files, size) in sorted(state.tables.items())
                    },
                },
                "projections": version_records(con),
            }
            click.echo(json.dumps(report, indent=2))
            return
        bound = (
            "transactions below"
            if getattr(source, "bound_kind", "transaction_id") == "transaction_id"
            else "positions up to"
        )
        click.echo(f"event store: {describe_dsn(dsn)}, {source.name}")
        streams = f" in {stream_count:,} streams" if stream_count is not None else ""
        click.echo(f"  events:    {total:,}{streams}")
        click.echo(f"  safe head: {bound} {head.bound}; last settled event {head.last}")
        if state.holder is not None:
            click.echo(f"  held back: {state.holder.describe()}")
        elif head.events_pending:
            click.echo("  in flight: some events belong to transactions still open; they are read once settled")
        click.echo(f"lake: {config.describe()}")
        click.echo(f"  holds:      {state.store or 'no store yet (the first ingest records which one)'}")
        click.echo(
            f"  checkpoint: {state.checkpoint} ({state.events:,} events in raw.events, snapshot {state.snapshot})"
        )
        click.echo(f"  lag:        {state.lag_events:,} events, {state.lag_seconds:,.0f} s")
        click.echo(f"  size:       {describe_size(on_disk)} (`projectionist maintain`)")
        for name, (files, size) in sorted(state.tables.items()):
            if files or name == "raw.events":  # small tables (meta.*) live inlined in the catalog: no files
                click.echo(f"  {name + ':':<{_NAME_WIDTH}} {files:,} files, {human_bytes(size)}")
        echo_projection_status(con)


def _native_counts(current: Settings, dsn: str) -> tuple[int, int] | None:
    """The events and streams of a native store table in one scan; None for another kind of store."""
    from eventstore.connection import connect_read_only
    from eventstore.native_store import table_ref

    if current.store_kind != "native":
        return None
    with connect_read_only(dsn) as conn:
        ref = table_ref(current.store_schema, current.store_table).as_string(conn)
        row = conn.execute(f"SELECT count(*), count(DISTINCT stream_id) FROM {ref}").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def _foreign_demo_store(kind: str, n_events: int, seed: int) -> tuple[Settings, str]:
    """Append the demo shop through ``kind``'s own writer into database projectionist_demo_<kind>.

    The demo gets its own lake too (catalog projectionist_lake_demo_<kind>, data under
    ``$PROJECTIONIST_HOME/lake_demo_<kind>``) unless PROJECTIONIST_LAKE names one: a lake holds one
    store's events. The click context's settings become the demo's, so later steps use them.
    """
    from eventstore.adapters.writers import append_demo_shop_store
    from eventstore.connection import EmbeddedServer, describe_dsn, ensure_database, event_store_dsn
    from warehouse.sources import close_source, open_source

    base = settings()
    dsn = ensure_database(event_store_dsn(base), f"projectionist_demo_{kind}")
    demo_settings = replace(base, store_kind=kind, event_store_dsn=dsn)
    if base.lake is None:
        server = EmbeddedServer(base.home).start()
        demo_settings = replace(
            demo_settings,
            lake=ensure_database(server, f"projectionist_lake_demo_{kind}"),
            lake_data=base.lake_data or str(base.home / f"lake_demo_{kind}" / "data"),
        )
    click.get_current_context().obj = demo_settings
    stored = _foreign_events(demo_settings, dsn)
    if stored:
        click.echo(f"the {kind} demo store already holds {stored:,} events; not appending the shop again")
    else:
        click.echo(f"appending about {n_events:,} shop events through the {kind} writer into {describe_dsn(dsn)} …")
        result = append_demo_shop_store(kind, dsn, events=n_events, seed=seed)
        click.echo(
            f"appended {result.events:,} events in {result.streams:,} cart streams "
            f"({result.transactions:,} transactions, {result.seconds:.1f} s)"
        )
    source = open_source(demo_settings, dsn)
    try:
        head = source.head()
        click.echo(f"{source.name}: safe head {head.bound} ({_bound_word(source)}); last event {head.last}")
    finally:
        close_source(source)
    return demo_settings, dsn


def _bound_word(source: object) -> str:
    return "a position" if getattr(source, "bound_kind", "transaction_id") == "position" else "a transaction id"


def _foreign_events(settings: Settings, dsn: str) -> int:
    """Events already in the demo store of ``settings.store_kind`` (0 when its tables do not exist yet)."""
    from eventstore.positions import START
    from warehouse.sources import close_source, open_source

    try:
        source = open_source(settings, dsn)
    except ConfigurationError:
        return 0
    try:
        return source.pending(START)[0]
    finally:
        close_source(source)


def _demo_queries(settings: Settings) -> None:
    from warehouse.query import format_table, run_query

    queries = (
        (
            "events per type",
            "SELECT event_type, event_version, count(*) AS events FROM raw.all_events GROUP BY ALL ORDER BY ALL",
        ),
        (
            "best-selling products (analytics.events_item_added)",
            "SELECT product_id, sum(quantity) AS units, round(sum(quantity * unit_price), 2) AS revenue "
            "FROM analytics.events_item_added GROUP BY product_id ORDER BY revenue DESC LIMIT 3",
        ),
        (
            "longest streams (analytics.stream_stats)",
            "SELECT stream_id, events, duration, last_event_type FROM analytics.stream_stats "
            "ORDER BY events DESC, stream_id LIMIT 3",
        ),
    )
    con = read_only_lake()
    try:
        for title, query in queries:
            click.echo(f"\n-- {title}\n{query};")
            click.echo(format_table(run_query(con, query)))
    finally:
        con.close()
    click.echo('\nquery it yourself: projectionist sql "...", projectionist shell, or projectionist attach')
