"""The lake commands: ``ingest``, ``compact``, ``sql``, ``shell`` and ``attach``.

Also what the demo shares with them: :func:`ingest_and_report` and :func:`read_only_lake`.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

import click

from eventstore.errors import ConfigurationError
from eventstore.quoting import quote_literal
from eventstore.settings import DEFAULT_LONG_STREAM_THRESHOLD, Settings
from pipelines.cli.base import cli, fail_cleanly, settings
from warehouse.errors import LakeConfigurationError, LakeNotCreatedError

if TYPE_CHECKING:
    import duckdb

    from warehouse.lake import LakeConfig

__all__ = ["DEFAULT_BATCH_SIZE", "ingest_and_report", "read_only_lake"]

# Measured: 10 M events in batches of 2,000,000 under this limit peaked at 403 MiB RSS (benchmarks/RESULTS.md).
DEFAULT_MEMORY_LIMIT = "512MB"
# warehouse.ingest.DEFAULT_BATCH_SIZE (why that size is there), written out so that `--help` loads no DuckDB;
# tests/pipelines/test_lake_cli.py keeps the two equal.
DEFAULT_BATCH_SIZE = 2_000_000


def ingest_and_report(
    settings: Settings,
    dsn: str,
    *,
    batch_size: int,
    compact_after: int | None,
    threshold: int,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> None:
    """Ingest what settled in the store into the lake, refresh the analytics views, print what it did."""
    from projections.registry import declared_types, field_policy
    from warehouse.analytics import refresh_analytics
    from warehouse.event_catalog import catalog_batch, ensure_event_catalog
    from warehouse.ingest import INGEST_DEAD_LETTER, ingest, lake_checkpoint
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.sources import close_source, open_source

    config = LakeConfig.from_settings(settings)
    source = open_source(settings, dsn)
    try:
        con = open_lake(config, memory_limit=memory_limit)
        try:
            ensure_event_catalog(con)
            if sys.stderr.isatty():
                after, _ = lake_checkpoint(con)
                head = source.head(after)
                estimate = max(0, head.last.global_position - after.global_position)
                with click.progressbar(length=estimate, label="ingesting", file=sys.stderr) as bar:
                    result = ingest(
                        con,
                        source,
                        batch_size=batch_size,
                        progress=bar.update,
                        compact_after=compact_after,
                        in_commit=catalog_batch,
                    )
            else:
                result = ingest(
                    con, source, batch_size=batch_size, compact_after=compact_after, in_commit=catalog_batch
                )
            views = []
            if result.events:  # nothing new: the views stand, and the projection modules need not load
                views = refresh_analytics(
                    con,
                    long_stream_threshold=threshold,
                    long_stream_days=settings.long_stream_days,
                    declared=declared_types(),
                    fields=field_policy(),
                )
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
    from warehouse.ingest import INGEST_DEAD_LETTER

    row = con.execute("SELECT count(*) FROM meta.dead_letters WHERE projection = ?", [INGEST_DEAD_LETTER]).fetchone()
    return int(row[0]) if row else 0


@cli.command("ingest")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, help="Events per lake commit.")
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
@click.option("--dry-run", is_flag=True, help="Say how many events wait in the store; ingest nothing.")
@fail_cleanly
def ingest_command(
    batch_size: int, no_compact: bool, memory_limit: str, long_stream_threshold: int, dry_run: bool
) -> None:
    """Land every settled event not yet in the lake into raw.events, checkpointed per commit."""
    from eventstore.connection import event_store_dsn

    if batch_size < 1:
        raise ConfigurationError("--batch-size must be at least 1")
    current = settings()
    dsn = event_store_dsn(current)
    if dry_run:
        _ingest_dry_run(current, dsn, batch_size)
        return
    ingest_and_report(
        current,
        dsn,
        batch_size=batch_size,
        compact_after=None if no_compact else 64,
        threshold=long_stream_threshold,
        memory_limit=memory_limit,
    )


def _ingest_dry_run(current: Settings, dsn: str, batch_size: int) -> None:
    from eventstore.positions import START
    from warehouse.ingest import lake_checkpoint
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.sources import close_source, open_source

    source = open_source(current, dsn)
    try:
        try:
            con = open_lake(LakeConfig.from_settings(current), read_only=True)
        except LakeNotCreatedError:
            checkpoint = START
        else:
            try:
                checkpoint, _ = lake_checkpoint(con)
            finally:
                con.close()
        head = source.head(checkpoint)
        waiting, _ = source.pending(checkpoint)
    finally:
        close_source(source)
    commits = -(-waiting // batch_size)
    click.echo(
        f"dry run: {waiting:,} events of {source.name} are not in the lake yet (after checkpoint {checkpoint}; "
        f"settled up to {head.bound}); ingesting them takes about {commits:,} commit(s); nothing was ingested"
    )


@cli.command("compact")
@click.option("--dry-run", is_flag=True, help="Say how many data files raw.events has; merge nothing.")
@fail_cleanly
def compact_command(dry_run: bool) -> None:
    """Merge small adjacent Parquet files of raw.events (ingest also does it past 64 files)."""
    from warehouse.ingest import compact, table_files
    from warehouse.lake import LakeConfig, open_lake

    con = open_lake(LakeConfig.from_settings(settings()), read_only=dry_run)
    try:
        if dry_run:
            files, size = table_files(con).get("raw.events", (0, 0))
            click.echo(f"dry run: raw.events has {files:,} data files ({size:,} bytes) to merge; nothing was changed")
            return
        before, after = compact(con)
    finally:
        con.close()
    click.echo(f"raw.events: {before:,} data files before, {after:,} after")


def read_only_lake(snapshot: int | None = None) -> Any:
    """The lake attached read-only in the analyst sandbox (:func:`~warehouse.query.sandbox`)."""
    from eventstore.duckdb_connections import new_connection
    from warehouse.lake import LakeConfig, analyst_lake, open_lake
    from warehouse.query import sandbox

    current = settings()
    config = replace(LakeConfig.from_settings(current, create=False), snapshot=snapshot)
    con = new_connection(*config.extensions)  # one DuckDB instance checks the role and reads the lake
    try:
        analyst = analyst_lake(config, con)
    except BaseException:
        con.close()
        raise
    if analyst is None:
        if config.catalog_kind == "postgres":
            _owner_notice()
        con = open_lake(config, read_only=True, connection=con)
    else:
        try:
            con = open_lake(analyst, read_only=True, connection=con)
        except LakeNotCreatedError:
            raise
        except LakeConfigurationError:  # the role cannot log in (a catalog that wants a password)
            _owner_notice()
            con = open_lake(config, read_only=True)
    try:
        sandbox(con, config.data_path, current.home / "tmp" / "analyst")
    except BaseException:
        con.close()
        raise
    return con


def _owner_notice() -> None:
    from warehouse.lake import ANALYST_ROLE

    click.echo(
        f"notice: the read-only catalog role {ANALYST_ROLE} cannot be used here (the catalog's owner may "
        "not create it, or it cannot log in): this session reads the catalog with the owner's "
        "credentials (docs/lake.md, 'For analysts')",
        err=True,
    )


@cli.command("sql", context_settings={"ignore_unknown_options": True})
@click.argument("query", required=False)
@click.option("-f", "--file", "sql_file", type=click.File("r"), help="Read the SQL from this file (- for stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")
@click.option(
    "--as-of-position",
    metavar="P",
    help="Answer as the lake stood when the store was at checkpoint P (TRANSACTION_ID/GLOBAL_POSITION, as in status).",
)
@click.option(
    "--as-of", "as_of", metavar="TIMESTAMP", help="Answer as the lake stood at TIMESTAMP (ISO 8601; UTC if no zone)."
)
@fail_cleanly
def sql_command(
    query: str | None,
    sql_file: TextIO | None,
    as_json: bool,
    as_csv: bool,
    as_of_position: str | None,
    as_of: str | None,
) -> None:
    """Run QUERY on the lake (attached read-only; raw.*, analytics.*, meta.* unqualified).

    QUERY may start with a comment ("-- why ..."); `-` reads it from stdin, `-f FILE` from a file.
    With --as-of-position or --as-of, every table and view answers as of that lake snapshot.
    """
    from warehouse.query import analyst_scope, format_csv, format_json, format_table, run_query

    if (query is None) == (sql_file is None):
        raise ConfigurationError("give the SQL as QUERY, as `-` (stdin) or with -f FILE: exactly one of them")
    if sql_file is not None:
        query = sql_file.read()
    elif query == "-":
        query = sys.stdin.read()
    assert query is not None
    if as_json and as_csv:
        raise ConfigurationError("choose one of --json and --csv")
    snapshot, holds = _as_of(as_of_position, as_of)
    scope = analyst_scope()  # a bad PROJECTIONIST_ANALYST_SCHEMAS fails before the lake opens
    con = read_only_lake(snapshot)
    try:
        result = run_query(con, query, scope)
    finally:
        con.close()
    if as_json:
        click.echo(format_json(result))
    elif as_csv:
        click.echo(format_csv(result), nl=False)
    else:
        click.echo(format_table(result))
        if snapshot is not None:
            click.echo(f"(the lake as of snapshot {snapshot}{f', checkpoint {holds}' if holds else ''})")


def _as_of(position: str | None, moment: str | None) -> tuple[int | None, str | None]:
    """The snapshot ``--as-of-position`` or ``--as-of`` names (None: the current one) and the checkpoint it holds."""
    if position is None and moment is None:
        return None, None
    from warehouse.time_travel import parse_position, parse_time, snapshot_at_position, snapshot_at_time

    if position is not None and moment is not None:
        raise ConfigurationError("choose one of --as-of-position and --as-of")
    when = parse_time(moment) if moment is not None else None  # a malformed value fails before the lake opens
    if position is not None:
        parse_position(position)
    con = read_only_lake()
    try:
        if position is not None:
            snapshot, holds = snapshot_at_position(con, position)
            return snapshot, str(holds)
        assert when is not None
        return snapshot_at_time(con, when), None
    finally:
        con.close()


@cli.command("shell")
@click.option("--write", is_flag=True, help="Attach the lake writable (default: read-only).")
@fail_cleanly
def shell_command(write: bool) -> None:
    """An interactive DuckDB session with the lake attached (SQL ending with ';', .tables, .quit)."""
    from warehouse.lake import LakeConfig, open_lake
    from warehouse.query import analyst_scope, shell, stream_reader, terminal_reader

    config = LakeConfig.from_settings(settings())
    scope = None if write else analyst_scope()  # the operator's writable session is not an analyst's
    con = open_lake(config, read_only=False) if write else read_only_lake()
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo(f"lake attached {'writable' if write else 'read-only'}: {config.describe()}; .help for help")
    try:
        failures = shell(con, terminal_reader() if interactive else stream_reader(sys.stdin), click.echo, scope)
    finally:
        con.close()
    if failures and not interactive:
        sys.exit(1)


@cli.command("attach")
@click.option(
    "--show-password", is_flag=True, help="Put the read-only role's password in the printed DSN (TCP clients)."
)
@fail_cleanly
def attach_command(show_password: bool) -> None:
    """Print the statements that attach this lake read-only from the duckdb CLI or any DuckDB client.

    With a PostgreSQL catalog they log in as the read-only role projectionist_analyst, which can only
    SELECT the catalog: the analyst's DuckDB cannot commit to the lake, even outside Projectionist.
    """
    import duckdb

    from eventstore.duckdb_connections import bundled_extension_path
    from warehouse.lake import LakeConfig

    current = settings()
    config = LakeConfig.from_settings(current)
    notes: list[str] = []
    if config.catalog_kind == "postgres":
        config, notes = _analyst_attach(current, config, show_password)
    extensions = [("ducklake", "ducklake"), ("postgres", "postgres_scanner")]
    if config.catalog_kind == "sqlite":
        extensions = [("ducklake", "ducklake"), ("sqlite", "sqlite_scanner")]
    if config.s3 is not None:
        extensions += [("httpfs", "httpfs"), ("aws", "aws")]
    click.echo("-- DuckDB " + duckdb.__version__ + " (other versions cannot read the bundled extensions)")
    for note in notes:
        click.echo(f"-- {note}")
    for name, _ in extensions:
        click.echo(f"INSTALL {name};")
    for name, _ in extensions:
        click.echo(f"LOAD {name};")
    if config.s3 is not None:
        click.echo("-- the lake's files are on S3: credentials come from your AWS environment, profile or role")
        click.echo(config.s3.secret_sql() + ";")
    click.echo(config.attach_sql(read_only=True, with_data_path=False) + ";")
    click.echo("USE lake;")
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
    from psycopg import conninfo

    from eventstore.connection import EmbeddedServer, libpq_conninfo
    from pipelines.server import listening_port, role_password
    from warehouse.lake import ANALYST_ROLE, analyst_lake

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
