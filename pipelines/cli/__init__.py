"""The ``projectionist`` command line: the group of :mod:`pipelines.cli.base` with every command family
registered on it (:mod:`~pipelines.cli.store`, :mod:`~pipelines.cli.lake`, :mod:`~pipelines.cli.server`,
:mod:`~pipelines.cli.versions`, :mod:`~pipelines.cli.streams`, :mod:`~pipelines.cli.maintain`), and
:func:`main`, the console script's entry point."""

from __future__ import annotations

from eventstore.private import private_umask
from pipelines.cli import lake, maintain, server, store, streams, versions  # noqa: F401  (importing them registers their commands)
from pipelines.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    private_umask()
    cli(prog_name="projectionist")
