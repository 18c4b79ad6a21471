"""The ``projectionist`` command line: the group of :mod:`pipelines.cli.base` with every command family
registered on it (one module each: store, lake, server, versions, backup, report, archive, governance,
streams, maintain, privacy, feed), and
:func:`main`, the console script's entry point."""

from __future__ import annotations

from eventstore.private import private_umask
from pipelines.cli import (  # noqa: F401  (importing them registers their commands)
    archive,
    backup,
    feed,
    governance,
    lake,
    maintain,
    privacy,
    report,
    server,
    store,
    streams,
    versions,
)
from pipelines.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    private_umask()
    cli(prog_name="projectionist")
