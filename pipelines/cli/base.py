"""The ``projectionist`` click group (``--home``, ``--dsn``) and what every command family shares.

No commands here: :func:`fail_cleanly` (errors as one line and an exit code), :func:`exit_with` and
:func:`settings` (the command's settings; the first call makes the home private).

Like every CLI module, this one imports nothing heavy at module level (no DuckDB, psycopg, polars,
pyarrow, Dagster): ``projectionist --help`` and argument errors answer before any of them loads.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from eventstore.errors import ProjectionistError
from eventstore.private import secure_home
from eventstore.settings import Settings

__all__ = ["cli", "exit_with", "fail_cleanly", "settings"]

F = TypeVar("F", bound=Callable[..., Any])


def fail_cleanly(func: F) -> F:
    """Print errors as one line and exit with the error's code (75 transient, 2 terminal), no traceback.

    A PostgreSQL or DuckDB failure that no layer below turned into a ProjectionistError is
    classified here (:mod:`eventstore.failures`): a server restarting mid-command is transient.
    """

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ProjectionistError as exc:
            exit_with(exc)
        except Exception as exc:
            if not _database_error(exc):
                raise
            from eventstore.failures import translate

            exit_with(translate(exc, f"{func.__name__.removesuffix('_command')} failed"))

    return wrapper  # type: ignore[return-value]


def _database_error(exc: Exception) -> bool:
    """Whether ``exc`` is a DuckDB (not an interrupt) or psycopg error; one only raised once its library loaded."""
    duckdb = sys.modules.get("duckdb")
    psycopg = sys.modules.get("psycopg")
    if duckdb is not None and isinstance(exc, duckdb.Error):
        return not isinstance(exc, duckdb.InterruptException)
    return psycopg is not None and isinstance(exc, psycopg.Error)


def exit_with(exc: ProjectionistError) -> None:
    """Print ``exc`` as one ``error:`` line on stderr and exit with its code."""
    hint = " (transient: retrying later may help)" if exc.retryable else ""
    click.echo(f"error: {exc}{hint}", err=True)
    sys.exit(exc.exit_code)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``projectionist X (DuckDB Y, Python Z)``: what a bug report needs (DuckDB's version fixes the lake format's)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib import metadata

    python = sys.version.split()[0]
    duckdb = metadata.version("duckdb")  # the installed wheel's, without loading DuckDB
    click.echo(f"projectionist {metadata.version('projectionist')} (DuckDB {duckdb}, Python {python})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the versions of Projectionist, DuckDB and Python, and exit.",
)
@click.option("--home", type=click.Path(path_type=Path), help="Data root [env PROJECTIONIST_HOME; ./.projectionist].")
@click.option("--dsn", help="Event store DSN [env PROJECTIONIST_EVENT_STORE_DSN; unset: embedded PostgreSQL].")
@click.pass_context
@fail_cleanly
def cli(ctx: click.Context, home: Path | None, dsn: str | None) -> None:
    """Projectionist: rebuildable, versioned projections and analytics from your event store."""
    ctx.obj = Settings.from_env().with_overrides(home=home, event_store_dsn=dsn)


def settings() -> Settings:
    """The command's settings; the first call also checks the store kind and makes the home private.

    Every command reads its settings here, so an unknown ``PROJECTIONIST_EVENT_STORE_KIND`` stops every
    command; the check waits until then because the kinds' registry loads DuckDB and psycopg, which
    ``--help`` and argument errors need not (:func:`secure_home` makes the home private).

    They are the current context's: a command may replace them for the steps it runs next (``demo
    --store`` points them at its own store and lake). The once-per-process flag lives in ``meta``, which
    every context of a command line shares.
    """
    ctx = click.get_current_context()
    obj = ctx.obj
    assert isinstance(obj, Settings)
    if not ctx.meta.get("projectionist.home_secured"):
        if obj.store_kind != "native":  # the default kind needs no look-up (nor pyarrow, which the registry loads)
            from eventstore.adapters import adapter_class

            adapter_class(obj.store_kind)
        ctx.meta["projectionist.home_secured"] = True
        tightened = secure_home(obj.home)
        if tightened:
            click.echo(
                f"notice: {obj.home} and {tightened - 1:,} files and folders under it were readable by other "
                "users; they are now private to their owner (0700 folders, 0600 files; docs/security.md)",
                err=True,
            )
    return obj
