"""DuckDB with the extensions Projectionist needs, loaded without touching the network.

DuckDB normally downloads extensions on first ``LOAD``; this network forbids it. The
``duckdb-extension-<name>`` wheels ship the binaries for the pinned DuckDB version, so a
normal ``LOAD`` is tried first (an extension a user installed themselves wins) and the
bundled file is loaded when it fails.

Verifying an extension's signature costs DuckDB a hash of the whole file at every ``LOAD``: 0.18 s
of every command for ducklake and postgres (78 MB), more than the rest of a ``projectionist sql``.
A new connection whose extensions all come from the wheels (none installed by the user) loads
them without that check (``allow_unsigned_extensions``): their integrity is the environment's, the
hashes ``uv.lock`` pins and the installer checks, as for DuckDB's own library that would check
them. Such an instance would also load another unsigned file, so every SQL it runs is
Projectionist's or the project's own, or an analyst's inside :func:`warehouse.query.sandbox`,
where DuckDB refuses every ``LOAD`` (``enable_external_access = false``, configuration locked).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import duckdb

from eventstore.errors import ConfigurationError

__all__ = ["bundled_extension_path", "load_extension", "new_connection"]

_BUNDLES = {
    "postgres_scanner": "duckdb_extension_postgres_scanner",
    "ducklake": "duckdb_extension_ducklake",
    "sqlite_scanner": "duckdb_extension_sqlite",
    "httpfs": "duckdb_extension_httpfs",
    "aws": "duckdb_extension_aws",
}
_ALIASES = {"postgres": "postgres_scanner", "sqlite": "sqlite_scanner"}


def _bundled_path(name: str) -> Path | None:
    module = importlib.import_module(_BUNDLES[name])
    base = Path(module.__file__ or "").parent / "extensions" / f"v{duckdb.__version__}"
    candidates = sorted(base.glob("*.duckdb_extension"))
    return candidates[0] if candidates else None


def bundled_extension_path(name: str) -> Path | None:
    """The extension file bundled in a duckdb-extension-* wheel (for a duckdb CLI user's ``LOAD '<path>'``)."""
    name = _ALIASES.get(name, name)
    return _bundled_path(name) if name in _BUNDLES else None


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load extension ``name`` (postgres, ducklake, sqlite, httpfs, aws): installed copy first, bundled wheel next."""
    name = _ALIASES.get(name, name)
    try:
        con.execute(f"LOAD {name}")
        return
    except duckdb.Error:
        pass
    path = _bundled_path(name) if name in _BUNDLES else None
    if path is None:
        raise ConfigurationError(
            f"DuckDB extension {name!r} is neither installed nor bundled for DuckDB "
            f"{duckdb.__version__}: reinstall with `uv sync` (duckdb and duckdb-extension-* must "
            "have the same version)."
        )
    if path.name != f"{name}.duckdb_extension":
        path = _named_link(path, name)
    con.execute(f"LOAD '{path}'")


def _named_link(path: Path, name: str) -> Path:
    # DuckDB derives the entry point (<name>_duckdb_cpp_init) from the file name, and the sqlite
    # wheel ships sqlite_scanner as "sqlite.duckdb_extension": load it through a correctly named link.
    folder = Path(tempfile.gettempdir()) / f"projectionist-duckdb-{os.getuid()}-v{duckdb.__version__}"
    folder.mkdir(mode=0o700, exist_ok=True)
    link = folder / f"{name}.duckdb_extension"
    if not (link.is_symlink() and link.resolve() == path.resolve()):
        temporary = folder / f".{name}.{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(path)
        temporary.replace(link)  # atomic: a concurrent loader sees the old or the new link
    return link


def _installed(name: str) -> bool:
    """True when the user installed extension ``name`` for this DuckDB (its default extension folder)."""
    folder = Path.home() / ".duckdb" / "extensions" / f"v{duckdb.__version__}"
    return any(folder.glob(f"*/{name}.duckdb_extension"))


def new_connection(*extensions: str, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with ``extensions`` loaded and auto-download switched off.

    When every one of ``extensions`` is bundled and none installed, they are loaded from the wheels
    without a signature check (see the module's text).
    """
    names = [_ALIASES.get(extension, extension) for extension in extensions]
    bundled = {name: _bundled_path(name) for name in names if name in _BUNDLES and not _installed(name)}
    from_wheels = bool(names) and all(bundled.get(name) is not None for name in names)
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        # An INTERNAL error invalidates a DuckDB instance, and closing an invalidated instance
        # whose transaction is open aborts the whole process ("terminate called after throwing an
        # instance of 'duckdb::Exception'"). DuckLake 1.5.5 raises one when its catalog connection
        # drops mid-scan (a PostgreSQL restart under an ingest, measured). Our instances are in
        # memory: what they write lives in PostgreSQL and Parquet, whose transactions roll back on
        # their own, so there is nothing for the invalidation to protect; callers drop the
        # connection after such an error and open a new one.
        "disable_database_invalidation": True,
    }
    if threads is not None:
        config["threads"] = threads
    if from_wheels:
        config["allow_unsigned_extensions"] = True
    con = duckdb.connect(":memory:", config=config)
    # DuckDB draws its own bar on stdout for a statement past 2 s, into whatever output a command has
    # (a pipe, a log): Projectionist's bars (warehouse.progress) read its progress instead.
    con.execute("SET enable_progress_bar = false")
    for name in names:
        path = bundled.get(name) if from_wheels else None
        if path is None:
            load_extension(con, name)
            continue
        if path.name != f"{name}.duckdb_extension":
            path = _named_link(path, name)
        con.execute(f"LOAD '{path}'")
    return con
