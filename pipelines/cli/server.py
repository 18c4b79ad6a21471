"""The commands of long-running servers: ``up``, ``down`` and ``rotate-password`` (the embedded
PostgreSQL that holds the event store and the lake's catalog) and ``ui`` (the Dagster UI)."""

from __future__ import annotations

import sys

import click

from pipelines.cli.base import cli, fail_cleanly, settings


@cli.command("up")
@click.option("--port", type=click.IntRange(1024, 65535), help="Also listen on 127.0.0.1:PORT (TCP) for GUI clients.")
@fail_cleanly
def up_command(port: int | None) -> None:
    """Start the embedded PostgreSQL (event store and lake catalog) and keep it running for outside clients.

    Over TCP every login needs a password: the superuser's is made on first use, shown once and
    kept in the home (0600); `projectionist rotate-password` replaces it.
    """
    from eventstore.connection import EMBEDDED_STORE_DATABASE, EmbeddedServer, ensure_database
    from pipelines.server import listen_on_port, password_file, role_password
    from warehouse.lake import LAKE_DATABASE

    current = settings()
    server = EmbeddedServer(current.home)
    if port is not None:
        listen_on_port(server, port)
    dsn = server.start()
    lake = ensure_database(dsn, LAKE_DATABASE)
    store = ensure_database(dsn, EMBEDDED_STORE_DATABASE)
    click.echo(f"embedded PostgreSQL running (pid {server.running_pid()}) under {server.pgdata}")
    click.echo(f"  event store: {store}")
    click.echo(f"  lake catalog: {lake}")
    if port is not None:
        password, new = role_password(dsn, current.home, "postgres")
        where = password_file(current.home, "postgres")
        click.echo(f"  TCP: 127.0.0.1:{port}, user postgres (superuser), password required")
        if new:
            click.echo(f"  password: {password}  (shown once; kept in {where}, readable by you only)")
        else:
            click.echo(f"  password: in {where}; `projectionist rotate-password` makes a new one")
        click.echo("  analysts: `projectionist attach` prints a read-only login to the lake")
    click.echo("stop it with `projectionist down`")


@cli.command("rotate-password")
@click.option("--analyst", is_flag=True, help="Rotate the read-only role projectionist_analyst's password instead.")
@fail_cleanly
def rotate_password_command(analyst: bool) -> None:
    """Give the embedded PostgreSQL's superuser (or the read-only analyst role) a new TCP password."""
    from eventstore.connection import EmbeddedServer, ensure_database
    from pipelines.server import password_file, role_password
    from warehouse.lake import ANALYST_ROLE, LAKE_DATABASE, LakeConfig, analyst_lake

    current = settings()
    server = EmbeddedServer(current.home)
    dsn = server.start()
    role = "postgres"
    if analyst:
        role = ANALYST_ROLE
        embedded = LakeConfig("postgres", ensure_database(dsn, LAKE_DATABASE), str(current.home / "lake" / "data"))
        analyst_lake(embedded)  # makes the role when it is missing
    password, _ = role_password(dsn, current.home, role, rotate=True)
    click.echo(f"new password of {role} on the embedded PostgreSQL: {password}")
    click.echo(f"  kept in {password_file(current.home, role)}; clients that use the old one must change it")


@cli.command("down")
@fail_cleanly
def down_command() -> None:
    """Stop the embedded PostgreSQL."""
    from eventstore.connection import EmbeddedServer

    server = EmbeddedServer(settings().home)
    click.echo("embedded PostgreSQL stopped" if server.stop() else "embedded PostgreSQL was not running")


@cli.command("ui")
@click.option("--port", type=int, default=3000, show_default=True, help="Port on 127.0.0.1 (0: any free port).")
@fail_cleanly
def ui_command(port: int) -> None:
    """Start the Dagster UI on 127.0.0.1 with this configuration; Ctrl-C stops it and every child."""
    import signal
    import time

    from pipelines.ui import dagster_home, free_port, start_ui, stop_process_group

    current = settings()
    port = port or free_port()
    process = start_ui(current, port)
    click.echo(f"Dagster UI: http://127.0.0.1:{port}  (instance {dagster_home(current)}; Ctrl-C stops it)")

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
