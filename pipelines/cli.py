"""The ``projectionist`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb
import psycopg
from psycopg import conninfo

from eventstore.adapters import adapter_class, store_kinds
from eventstore.connection import (
    EMBEDDED_STORE_DATABASE,
    EmbeddedServer,
    connect,
    connect_read_only,
    describe_dsn,
    ensure_database,
    event_store_dsn,
    libpq_conninfo,
)
from eventstore.duck import bundled_extension_path
from eventstore.errors import ConfigurationError, ProjectionistError
from eventstore.failures import translate
from eventstore.native import create_schema, table_ref
from eventstore.positions import START
from eventstore.private import private_umask, secure_home
from eventstore.quoting import quote_literal
from eventstore.reader import NativeReader
from eventstore.settings import Settings
from pipelines.server import listen_on_port, listening_port, password_file, role_password
from warehouse.analytics import DEFAULT_LONG_STREAM_THRESHOLD, refresh_analytics
from warehouse.errors import LakeConfigurationError, LakeNotCreatedError
from warehouse.ingest import INGEST_DEAD_LETTER, compact, ingest, lake_checkpoint
from warehouse.lake import ANALYST_ROLE, LAKE_DATABASE, LakeConfig, analyst_lake, open_lake
from warehouse.query import (
    format_csv,
    format_json,
    format_table,
    run_query,
    sandbox,
    shell,
    stream_reader,
    terminal_reader,
)
from warehouse.sources import close_source, open_source
from warehouse.status import lake_status

F = TypeVar("F", bound=Callable[..., Any])


def _fail_cleanly(func: F) -> F:
    """Print errors as one line and exit with the error's code (75 transient, 2 terminal), no traceback.

    A PostgreSQL or DuckDB failure that no layer below turned into a ProjectionistError is
    classified here (:mod:`eventstore.failures`): a server restarting mid-command is transient.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (duckdb.Error, psycopg.Error) as exc:
            if isinstance(exc, duckdb.InterruptException):
                raise
            _exit_with(translate(exc, f"{func.__name__.removesuffix('_command')} failed"))
        except ProjectionistError as exc:
            _exit_with(exc)

    return wrapper  # type: ignore[return-value]


def _exit_with(exc: ProjectionistError) -> None:
    hint = " (transient: retrying later may help)" if exc.retryable else ""
    click.echo(f"error: {exc}{hint}", err=True)
    sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), help="Data root [env PROJECTIONIST_HOME; ./.projectionist].")
@click.option("--dsn", help="Event store DSN [env PROJECTIONIST_EVENT_STORE_DSN; unset: embedded PostgreSQL].")
@click.pass_context
@_fail_cleanly
def cli(ctx: click.Context, home: Path | None, dsn: str | None) -> None:
    """Projectionist: rebuildable, versioned projections and analytics from your event store."""
    ctx.obj = Settings.from_env().with_overrides(home=home, event_store_dsn=dsn)
    adapter_class(ctx.obj.store_kind)  # an unknown PROJECTIONIST_EVENT_STORE_KIND stops every command here


def _settings() -> Settings:
    """The command's settings; the first call also makes the home private (:func:`secure_home`)."""
    ctx = click.get_current_context().find_root()
    obj = ctx.obj
    assert isinstance(obj, Settings)
    if not ctx.meta.get("projectionist.home_secured"):
        ctx.meta["projectionist.home_secured"] = True
        tightened = secure_home(obj.home)
        if tightened:
            click.echo(
                f"notice: {obj.home} and {tightened - 1:,} files and folders under it were readable by other "
                "users; they are now private to their owner (0700 folders, 0600 files; docs/security.md)",
                err=True,
            )
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
@click.option("--no-ingest", "skip_ingest", is_flag=True, help="Only append and read back; do not touch the lake.")
@click.option(
    "--store",
    "store_kind",
    type=click.Choice(store_kinds()),
    default="native",
    show_default=True,
    help="Write the shop through this store's own writer, into its own demo database and lake.",
)
@_fail_cleanly
def demo(n_events: int, writers: int, seed: int, skip_ingest: bool, store_kind: str) -> None:
    """Append a demo shop, read it back gap-safe, ingest it into the lake and query it."""
    from eventstore.demo import append_demo_shop, first_stream_id

    if store_kind != "native":
        settings, dsn = _foreign_demo_store(store_kind, n_events, seed)
        if not skip_ingest:
            _ingest_and_report(
                settings, dsn, batch_size=500_000, compact_after=64, threshold=DEFAULT_LONG_STREAM_THRESHOLD
            )
            _demo_queries(settings)
        return
    settings = _settings()
    dsn = event_store_dsn(settings)
    with connect(dsn) as conn:
        ref = table_ref(settings.store_schema, settings.store_table).as_string(conn)
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ref,)).fetchone()
        if not (found and found[0]):
            # The demo's own store: created like `init` does, only when missing. Its DDL takes locks that
            # writers would queue behind, so an existing table is never touched (reading never writes).
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
            f"({result.transactions:,} transactions, {result.out_of_order_commits:,} of them committed after "
            f"later positions; {result.seconds:.1f} s)"
        )
    with NativeReader(dsn, settings.store_schema, settings.store_table) as reader:
        head = reader.head()
        count = sum(batch.num_rows for batch in reader.read(until=head))
    click.echo(f"read back {count:,} settled events through the gap-safe reader")
    click.echo(f"safe head: transactions below {head.bound}; last event {head.last}")
    if not skip_ingest:
        _ingest_and_report(settings, dsn, batch_size=500_000, compact_after=64, threshold=DEFAULT_LONG_STREAM_THRESHOLD)
        _demo_queries(settings)
        _projection_commands.demo_projections()


@cli.command()
@_fail_cleanly
def status() -> None:
    """Show the event store's safe head and size, and the lake's checkpoint, lag and tables."""
    settings = _settings()
    dsn = event_store_dsn(settings)
    source = open_source(settings, dsn)  # checks the store's tables (no DDL: reading never writes)
    try:
        streams = ""
        if settings.store_kind == "native":
            with connect_read_only(dsn) as conn:
                ref = table_ref(settings.store_schema, settings.store_table).as_string(conn)
                row = conn.execute(f"SELECT count(DISTINCT stream_id) FROM {ref}").fetchone()
                streams = f" in {row[0] if row else 0:,} streams"
        total, _ = source.pending(START)
        config = LakeConfig.from_settings(settings)
        con = open_lake(config)
        try:
            state = lake_status(con, source)
        finally:
            con.close()
    finally:
        close_source(source)
    head = state.head
    bound = (
        "transactions below"
        if getattr(source, "bound_kind", "transaction_id") == "transaction_id"
        else "positions up to"
    )
    click.echo(f"event store: {describe_dsn(dsn)}, {source.name}")
    click.echo(f"  events:    {total:,}{streams}")
    click.echo(f"  safe head: {bound} {head.bound}; last settled event {head.last}")
    if state.holder is not None:
        click.echo(f"  held back: {state.holder.describe()}")
    elif head.events_pending:
        click.echo("  in flight: some events belong to transactions still open; they are read once settled")
    click.echo(f"lake: {config.describe()}")
    click.echo(f"  holds:      {state.store or 'no store yet (the first ingest records which one)'}")
    click.echo(f"  checkpoint: {state.checkpoint} ({state.events:,} events in raw.events, snapshot {state.snapshot})")
    click.echo(f"  lag:        {state.lag_events:,} events, {state.lag_seconds:,.0f} s")
    for name, (files, size) in sorted(state.tables.items()):
        if files or name == "raw.events":  # small tables (meta.*) live inlined in the catalog: no files
            click.echo(f"  {name + ':':<{_NAME_WIDTH}} {files:,} files, {_human_bytes(size)}")
    con = open_lake(config)
    try:
        _projection_commands.echo_projection_status(con)
    finally:
        con.close()


_NAME_WIDTH = 24
# Measured: 10 M events in batches of 500,000 under this limit peaked at 755 MiB RSS (benchmarks/RESULTS.md).
DEFAULT_MEMORY_LIMIT = "512MB"


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _ingest_and_report(
    settings: Settings,
    dsn: str,
    *,
    batch_size: int,
    compact_after: int | None,
    threshold: int,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> None:
    config = LakeConfig.from_settings(settings)
    source = open_source(settings, dsn)
    try:
        con = open_lake(config, memory_limit=memory_limit)
        try:
            if sys.stderr.isatty():
                after, _ = lake_checkpoint(con)
                head = source.head(after)
                estimate = max(0, head.last.global_position - after.global_position)
                with click.progressbar(length=estimate, label="ingesting", file=sys.stderr) as bar:
                    result = ingest(
                        con, source, batch_size=batch_size, progress=bar.update, compact_after=compact_after
                    )
            else:
                result = ingest(con, source, batch_size=batch_size, compact_after=compact_after)
            views = refresh_analytics(con, long_stream_threshold=threshold) if result.events else []
            dead = _ingest_dead_letters(con)
        finally:
            con.close()
    finally:
        close_source(source)
    if result.events:
        rate = result.events / result.seconds if result.seconds else 0.0
        click.echo(
            f"ingested {result.events:,} events in {result.batches:,} commit{'' if result.batches == 1 else 's'} "
            f"({result.seconds:.1f} s, "
            f"{rate:,.0f} events/s); lake checkpoint {result.checkpoint}"
        )
    else:
        click.echo(f"lake is up to date at checkpoint {result.checkpoint}; nothing to ingest")
    if result.compacted:
        click.echo("merged small files of raw.events")
    if views:
        click.echo(f"analytics views written: {len(views)}")
    if dead:
        click.echo(
            f"{dead:,} undecodable event{'' if dead == 1 else 's'} kept in raw.events with data NULL and listed "
            f"in meta.dead_letters (projection '{INGEST_DEAD_LETTER}')"
        )


def _ingest_dead_letters(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM meta.dead_letters WHERE projection = ?", [INGEST_DEAD_LETTER]).fetchone()
    return int(row[0]) if row else 0


def _foreign_demo_store(kind: str, n_events: int, seed: int) -> tuple[Settings, str]:
    """Append the demo shop through ``kind``'s own writer into database projectionist_demo_<kind>.

    The demo gets its own lake too (catalog projectionist_lake_demo_<kind>, data under
    ``$PROJECTIONIST_HOME/lake_demo_<kind>``) unless PROJECTIONIST_LAKE names one: a lake holds one
    store's events. The click context's settings become the demo's, so later steps use them.
    """
    from eventstore.adapters.writers import append_demo_shop_store

    base = _settings()
    dsn = ensure_database(event_store_dsn(base), f"projectionist_demo_{kind}")
    settings = replace(base, store_kind=kind, event_store_dsn=dsn)
    if base.lake is None:
        server = EmbeddedServer(base.home).start()
        settings = replace(
            settings,
            lake=ensure_database(server, f"projectionist_lake_demo_{kind}"),
            lake_data=base.lake_data or str(base.home / f"lake_demo_{kind}" / "data"),
        )
    click.get_current_context().obj = settings
    stored = _foreign_events(settings, dsn)
    if stored:
        click.echo(f"the {kind} demo store already holds {stored:,} events; not appending the shop again")
    else:
        click.echo(f"appending about {n_events:,} shop events through the {kind} writer into {describe_dsn(dsn)} …")
        result = append_demo_shop_store(kind, dsn, events=n_events, seed=seed)
        click.echo(
            f"appended {result.events:,} events in {result.streams:,} cart streams "
            f"({result.transactions:,} transactions, {result.seconds:.1f} s)"
        )
    source = open_source(settings, dsn)
    try:
        head = source.head()
        click.echo(f"{source.name}: safe head {head.bound} ({_bound_word(source)}); last event {head.last}")
    finally:
        close_source(source)
    return settings, dsn


def _bound_word(source: object) -> str:
    return "a position" if getattr(source, "bound_kind", "transaction_id") == "position" else "a transaction id"


def _foreign_events(settings: Settings, dsn: str) -> int:
    """Events already in the demo store of ``settings.store_kind`` (0 when its tables do not exist yet)."""
    try:
        source = open_source(settings, dsn)
    except ConfigurationError:
        return 0
    try:
        return source.pending(START)[0]
    finally:
        close_source(source)


@cli.command("ingest")
@click.option("--batch-size", default=500_000, show_default=True, help="Events per lake commit.")
@click.option("--no-compact", is_flag=True, help="Do not merge small files after ingesting.")
@click.option(
    "--memory-limit",
    default=DEFAULT_MEMORY_LIMIT,
    show_default=True,
    help="DuckDB's memory limit while ingesting (with --batch-size, bounds peak memory).",
)
@click.option(
    "--long-stream-threshold",
    default=DEFAULT_LONG_STREAM_THRESHOLD,
    show_default=True,
    help="analytics.stream_stats flags streams with more events than this.",
)
@_fail_cleanly
def ingest_command(batch_size: int, no_compact: bool, memory_limit: str, long_stream_threshold: int) -> None:
    """Land every settled event not yet in the lake into raw.events, checkpointed per commit."""
    if batch_size < 1:
        raise ConfigurationError("--batch-size must be at least 1")
    settings = _settings()
    dsn = event_store_dsn(settings)
    _ingest_and_report(
        settings,
        dsn,
        batch_size=batch_size,
        compact_after=None if no_compact else 64,
        threshold=long_stream_threshold,
        memory_limit=memory_limit,
    )


@cli.command("compact")
@_fail_cleanly
def compact_command() -> None:
    """Merge small adjacent Parquet files of raw.events (ingest also does it past 64 files)."""
    con = open_lake(LakeConfig.from_settings(_settings()))
    try:
        before, after = compact(con)
    finally:
        con.close()
    click.echo(f"raw.events: {before:,} data files before, {after:,} after")


def _read_only_lake() -> Any:
    """The lake attached read-only, in the analyst sandbox (:func:`warehouse.query.sandbox`)."""
    settings = _settings()
    config = LakeConfig.from_settings(settings)
    analyst = analyst_lake(config)
    con = None
    if analyst is not None:
        try:
            con = open_lake(analyst, read_only=True)
        except LakeNotCreatedError:
            raise
        except LakeConfigurationError:  # the role cannot log in (a catalog that wants a password)
            con = None
    if con is None:
        if config.catalog_kind == "postgres":
            click.echo(
                f"notice: the read-only catalog role {ANALYST_ROLE} cannot be used here (the catalog's owner may "
                "not create it, or it cannot log in): this session reads the catalog with the owner's "
                "credentials (docs/lake.md, 'For analysts')",
                err=True,
            )
        con = open_lake(config, read_only=True)
    try:
        sandbox(con, config.data_path, settings.home / "tmp" / "analyst")
    except BaseException:
        con.close()
        raise
    return con


@cli.command("sql")
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@_fail_cleanly
def sql_command(query: str, as_json: bool, as_csv: bool) -> None:
    """Run QUERY on the lake (attached read-only; raw.*, analytics.*, meta.* unqualified)."""
    if as_json and as_csv:
        raise ConfigurationError("choose one of --json and --csv")
    con = _read_only_lake()
    try:
        result = run_query(con, query)
    finally:
        con.close()
    if as_json:
        click.echo(format_json(result))
    elif as_csv:
        click.echo(format_csv(result), nl=False)
    else:
        click.echo(format_table(result))


@cli.command("shell")
@click.option("--write", is_flag=True, help="Attach the lake writable (default: read-only).")
@_fail_cleanly
def shell_command(write: bool) -> None:
    """An interactive DuckDB session with the lake attached (SQL ending with ';', .tables, .quit)."""
    config = LakeConfig.from_settings(_settings())
    con = open_lake(config, read_only=False) if write else _read_only_lake()
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo(f"lake attached {'writable' if write else 'read-only'}: {config.describe()}; .help for help")
    try:
        failures = shell(con, terminal_reader() if interactive else stream_reader(sys.stdin), click.echo)
    finally:
        con.close()
    if failures and not interactive:
        sys.exit(1)


@cli.command("attach")
@click.option(
    "--show-password", is_flag=True, help="Put the read-only role's password in the printed DSN (TCP clients)."
)
@_fail_cleanly
def attach_command(show_password: bool) -> None:
    """Print the statements that attach this lake read-only from the duckdb CLI or any DuckDB client.

    With a PostgreSQL catalog they log in as the read-only role projectionist_analyst, which can only
    SELECT the catalog: the analyst's DuckDB cannot commit to the lake, even outside Projectionist.
    """
    settings = _settings()
    config = LakeConfig.from_settings(settings)
    notes: list[str] = []
    if config.catalog_kind == "postgres":
        config, notes = _analyst_attach(settings, config, show_password)
    extensions = [("ducklake", "ducklake"), ("postgres", "postgres_scanner")]
    if config.catalog_kind == "sqlite":
        extensions = [("ducklake", "ducklake"), ("sqlite", "sqlite_scanner")]
    click.echo("-- DuckDB " + duckdb.__version__ + " (other versions cannot read the bundled extensions)")
    for note in notes:
        click.echo(f"-- {note}")
    for name, _ in extensions:
        click.echo(f"INSTALL {name};")
    for name, _ in extensions:
        click.echo(f"LOAD {name};")
    click.echo(config.attach_sql(read_only=True, with_data_path=False) + ";")
    click.echo("USE lake;")
    if "://" not in config.data_path:
        click.echo("-- lock the session as `projectionist sql` does (no files outside the lake, no ATTACH, no SET):")
        click.echo(f"SET allowed_directories = [{quote_literal(config.data_path)}];")
        click.echo("SET enable_external_access = false;")
        click.echo("SET lock_configuration = true;")
    click.echo("-- without network, replace INSTALL/LOAD with the extensions bundled in this environment:")
    for _, bundled in extensions:
        path = bundled_extension_path(bundled)
        if path is not None:
            click.echo(f"-- LOAD '{path}';")


def _analyst_attach(settings: Settings, config: LakeConfig, show_password: bool) -> tuple[LakeConfig, list[str]]:
    """The catalog DSN `attach` prints (the read-only role's when it can be made) and notes for the reader."""
    analyst = analyst_lake(config)
    embedded = settings.lake is None
    if analyst is None:
        params = {k: v for k, v in libpq_conninfo(config.catalog).items() if k != "password"}
        notes = [
            f"this DSN is the catalog owner's (it can write the lake): its owner could not create the read-only "
            f"role {ANALYST_ROLE}; create it as docs/security.md shows, and export PGPASSWORD before starting duckdb"
        ]
        return replace(config, catalog=conninfo.make_conninfo("", **params)), notes
    params = {k: v for k, v in libpq_conninfo(analyst.catalog).items() if k != "password"}
    if not embedded:
        notes = [
            f"{ANALYST_ROLE} can only SELECT the catalog; give it a password in your PostgreSQL "
            f"(ALTER ROLE {ANALYST_ROLE} PASSWORD '...') and export PGPASSWORD before starting duckdb"
        ]
        return replace(analyst, catalog=conninfo.make_conninfo("", **params)), notes
    server = EmbeddedServer(settings.home)
    port = listening_port(server)
    if port is None:
        notes = [
            "this DSN reaches the embedded PostgreSQL through its Unix socket, for this OS user only; for other "
            "users or GUI clients run `projectionist up --port 5433`, then attach again"
        ]
        return replace(analyst, catalog=conninfo.make_conninfo("", **params)), notes
    password, _ = role_password(server.start(), settings.home, ANALYST_ROLE)
    tcp = {"host": "127.0.0.1", "port": str(port), "dbname": params.get("dbname"), "user": ANALYST_ROLE}
    if show_password:
        tcp["password"] = password
        notes = [f"{ANALYST_ROLE} can only SELECT the catalog; this DSN holds its password: share it privately"]
    else:
        notes = [
            f"the password of {ANALYST_ROLE} (read-only) is left out: `projectionist attach --show-password` "
            "prints it, or export PGPASSWORD before starting duckdb"
        ]
    return replace(analyst, catalog=conninfo.make_conninfo("", **tcp)), notes


@cli.command("up")
@click.option("--port", type=click.IntRange(1024, 65535), help="Also listen on 127.0.0.1:PORT (TCP) for GUI clients.")
@_fail_cleanly
def up_command(port: int | None) -> None:
    """Start the embedded PostgreSQL (event store and lake catalog) and keep it running for outside clients.

    Over TCP every login needs a password: the superuser's is made on first use, shown once and
    kept in the home (0600); `projectionist rotate-password` replaces it.
    """
    settings = _settings()
    server = EmbeddedServer(settings.home)
    if port is not None:
        listen_on_port(server, port)
    dsn = server.start()
    lake = ensure_database(dsn, LAKE_DATABASE)
    store = ensure_database(dsn, EMBEDDED_STORE_DATABASE)
    click.echo(f"embedded PostgreSQL running (pid {server.running_pid()}) under {server.pgdata}")
    click.echo(f"  event store: {store}")
    click.echo(f"  lake catalog: {lake}")
    if port is not None:
        password, new = role_password(dsn, settings.home, "postgres")
        where = password_file(settings.home, "postgres")
        click.echo(f"  TCP: 127.0.0.1:{port}, user postgres (superuser), password required")
        if new:
            click.echo(f"  password: {password}  (shown once; kept in {where}, readable by you only)")
        else:
            click.echo(f"  password: in {where}; `projectionist rotate-password` makes a new one")
        click.echo("  analysts: `projectionist attach` prints a read-only login to the lake")
    click.echo("stop it with `projectionist down`")


@cli.command("rotate-password")
@click.option("--analyst", is_flag=True, help=f"Rotate the read-only role {ANALYST_ROLE}'s password instead.")
@_fail_cleanly
def rotate_password_command(analyst: bool) -> None:
    """Give the embedded PostgreSQL's superuser (or the read-only analyst role) a new TCP password."""
    settings = _settings()
    server = EmbeddedServer(settings.home)
    dsn = server.start()
    role = "postgres"
    if analyst:
        role = ANALYST_ROLE
        embedded = LakeConfig("postgres", ensure_database(dsn, LAKE_DATABASE), str(settings.home / "lake" / "data"))
        analyst_lake(embedded)  # makes the role when it is missing
    password, _ = role_password(dsn, settings.home, role, rotate=True)
    click.echo(f"new password of {role} on the embedded PostgreSQL: {password}")
    click.echo(f"  kept in {password_file(settings.home, role)}; clients that use the old one must change it")


@cli.command("down")
@_fail_cleanly
def down_command() -> None:
    """Stop the embedded PostgreSQL."""
    server = EmbeddedServer(_settings().home)
    click.echo("embedded PostgreSQL stopped" if server.stop() else "embedded PostgreSQL was not running")


def _demo_queries(settings: Settings) -> None:
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
    con = _read_only_lake()
    try:
        for title, query in queries:
            click.echo(f"\n-- {title}\n{query};")
            click.echo(format_table(run_query(con, query)))
    finally:
        con.close()
    click.echo('\nquery it yourself: projectionist sql "...", projectionist shell, or projectionist attach')


@cli.command("ui")
@click.option("--port", type=int, default=3000, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
@_fail_cleanly
def ui_command(port: int) -> None:
    """Start the Dagster UI on 127.0.0.1 with this configuration; Ctrl-C stops it and every child."""
    import signal
    import time

    from pipelines.ui import dagster_home, free_port, start_dagster_dev, stop_process_group

    settings = _settings()
    port = port or free_port()
    process = start_dagster_dev(settings, port)
    click.echo(f"Dagster UI: http://127.0.0.1:{port}  (instance {dagster_home(settings)}; Ctrl-C stops it)")

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Explicit handlers: a shell starts background jobs with SIGINT ignored, and Python then never
    # raises KeyboardInterrupt; the UI must stop on either signal however it was started.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        click.echo("stopping the Dagster UI …")
    finally:
        stop_process_group(process)
    if process.returncode not in (0, None, -signal.SIGINT, -signal.SIGTERM):
        sys.exit(process.returncode)


def main() -> None:
    """Console-script entry point."""
    private_umask()
    cli(prog_name="projectionist")


# The projection-version commands register themselves on the group above.
from pipelines import projection_commands as _projection_commands  # noqa: E402

if __name__ == "__main__":
    # `python -m pipelines.cli` runs this file as __main__, while projection_commands registers
    # its commands on the group of the module pipelines.cli: run that one, complete.
    from pipelines.cli import main as _main

    _main()
