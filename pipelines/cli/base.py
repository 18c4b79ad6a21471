"""The ``projectionist`` click group (``--home``, ``--dsn``) and what every command family shares.

No commands here: :func:`fail_cleanly` (errors as one line and an exit code), :func:`exit_with` and
:func:`settings` (the command's settings; the first call makes the home private).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import click
import duckdb
import psycopg

from eventstore.adapters import adapter_class
from eventstore.errors import ProjectionistError
from eventstore.failures import translate
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
        except (duckdb.Error, psycopg.Error) as exc:
            if isinstance(exc, duckdb.InterruptException):
                raise
            exit_with(translate(exc, f"{func.__name__.removesuffix('_command')} failed"))
        except ProjectionistError as exc:
            exit_with(exc)

    return wrapper  # type: ignore[return-value]


def exit_with(exc: ProjectionistError) -> None:
    """Print ``exc`` as one ``error:`` line on stderr and exit with its code."""
    hint = " (transient: retrying later may help)" if exc.retryable else ""
    click.echo(f"error: {exc}{hint}", err=True)
    sys.exit(exc.exit_code)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``projectionist X (DuckDB Y, Python Z)``: what a bug report needs (DuckDB's version fixes the lake format's)."""
    if not value or ctx.resilient_parsing:
        return
    python = sys.version.split()[0]
    click.echo(f"projectionist {metadata.version('projectionist')} (DuckDB {duckdb.__version__}, Python {python})")
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
    adapter_class(ctx.obj.store_kind)  # an unknown PROJECTIONIST_EVENT_STORE_KIND stops every command here


def settings() -> Settings:
    """The command's settings; the first call also makes the home private (:func:`secure_home`).

    They are the current context's: a command may replace them for the steps it runs next (``demo
    --store`` points them at its own store and lake). The once-per-process flag lives in ``meta``, which
    every context of a command line shares.
    """
    ctx = click.get_current_context()
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
