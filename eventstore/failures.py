"""Transient or terminal: one classifier for the failures of PostgreSQL (psycopg, libpq) and DuckDB.

Schedulers act on the answer (exit 75 and Dagster's retry policy for transient, exit 2 and no
retry for terminal), so it must be right both ways: a server restarting is worth waiting for, a
wrong password is not. PostgreSQL's SQLSTATE decides where there is one. A failure to *connect*
has none (libpq reports it as text, and so does DuckDB's postgres extension, which wraps libpq,
for the event store it reads and the lake's catalog alike), so the text of libpq's message decides
there; those messages are stable across PostgreSQL versions and are what every client matches.

Anything neither list knows is terminal: retrying an error nobody understands forever hides it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import duckdb

from eventstore.errors import (
    ConfigurationError,
    ProjectionistError,
    StoreUnavailableError,
    TerminalError,
    TransientError,
)

__all__ = ["Verdict", "first_line", "reason", "scrub", "translate", "translated", "verdict"]

Verdict = Literal["transient", "terminal"]

# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_TRANSIENT_CLASSES = ("08", "53", "58")  # connection exception, insufficient resources, system error
_TRANSIENT_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available (our lock_timeout)
    "57014",  # query_canceled (statement_timeout, pg_cancel_backend)
    "57P01",  # admin_shutdown: the server is stopping (a restart)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now: the server is starting up or in recovery
    "57P05",  # idle_session_timeout
}

# libpq's words for "the server is not there right now" (connect, or mid-session).
_TRANSIENT_TEXT = re.compile(
    "|".join(
        (
            r"connection refused",
            r"on socket .*failed: no such file or directory",  # the socket is gone while the server restarts
            r"could not connect to server",
            r"server closed the connection unexpectedly",
            r"terminating connection due to administrator command",
            r"the database system is (starting up|shutting down|in recovery mode|not yet accepting connections)",
            r"timeout expired",
            r"connection timed out",
            r"could not (receive|send) data (from|to) server",
            r"ssl syscall error",
            r"ssl connection has been closed unexpectedly",
            r"connection to server was lost",
            r"no connection to the server",
            r"connection (is|was) closed",
            r"the connection is lost",
            r"broken pipe",
            r"connection reset by peer",
            r"too many clients already",
            r"remaining connection slots are reserved",
            r"temporary failure in name resolution",
            r"canceling statement due to (lock|statement) timeout",
            r"could not serialize access",
            r"deadlock detected",
            r"no space left on device",
            # DuckDB's postgres extension when a result never came back (its session was cut):
            # seen alone, without PostgreSQL's own words, when the server restarts mid-scan.
            r"attempting to fetch from an unsuccessful query result",
            # The same extension when no result at all came back for its COPY (libpq had no message),
            # or the COPY's first bytes never arrived: a run of the follow fault test under load
            # stopped on it as terminal while the store restarted.
            r'failed to prepare copy .*":\s*$',
            r"failed to fetch header for copy",
        )
    )
)
# libpq's and PostgreSQL's words for "this will never work as configured".
_TERMINAL_TEXT = re.compile(
    "|".join(
        (
            r"password authentication failed",
            r"no password supplied",
            r"authentication failed",
            r"no pg_hba\.conf entry",
            r"pg_hba\.conf rejects",
            r'role ".*" does not exist',
            r'database ".*" does not exist',
            r"permission denied",
            r"must be owner",
            r"invalid sslmode",
            r"sslmode value .* invalid",
            r"ssl was required",
            r"does not support ssl",
            r"ssl is not enabled",
            r"certificate",
            r"invalid connection option",
            r"invalid (integer value|port)",
            r"could not translate host name .*(name or service not known|no address associated)",
            r"missing \"=\" after",
            r"invalid uri",
        )
    )
)


# What libpq puts before its reason; the caller names the server itself.
_LIBPQ_PREFIX = re.compile(
    r"^(connection (failed|is bad): )?(connection to server (on socket|at) .*? failed: )?(FATAL: +)?"
)


_DUCKDB_CONNECT = re.compile(r'^.*?Unable to connect to Postgres at ".*?": ')


def first_line(exc: BaseException, lines: int = 1) -> str:
    """The first non-empty line (or ``lines`` lines, joined) of an error's message; its type when empty.

    libpq and DuckDB messages run over several lines; a one-line error shows the first, or the first
    two where the reason follows on the second (DuckLake's attach errors).
    """
    found = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " ".join(found[:lines]) if found else type(exc).__name__


#: libpq's reasons that only make sense with the preamble it had (which socket, which host).
_TERSE = {
    "no such file or directory": "the server is not running (its Unix socket is gone)",
    "connection refused": "connection refused (the server is not running or not listening there)",
}


def reason(exc: BaseException) -> str:
    """The first line of ``exc``'s message without libpq's preamble (which server, which socket).

    When what decides the verdict is on a later line (DuckDB puts the PostgreSQL error under its
    own), that part is added in parentheses.
    """
    line = first_line(exc)
    # DuckDB's postgres extension quotes the whole DSN before libpq's reason: the caller names the server.
    line = _DUCKDB_CONNECT.sub("", line)
    line = _LIBPQ_PREFIX.sub("", line) or line
    line = _TERSE.get(line.strip().lower(), line)
    first = first_line(exc).lower()
    if _TERMINAL_TEXT.search(first) or _TRANSIENT_TEXT.search(first):
        return line
    text = " ".join(str(exc).split())
    found = _TERMINAL_TEXT.search(text.lower()) or _TRANSIENT_TEXT.search(text.lower())
    if found:
        line += f" ({text[found.start() : found.end()]})"
    return line


_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"]+)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@")


def scrub(message: str, secrets: tuple[str, ...] = ()) -> str:
    """``message`` with every password it may quote (a DSN in DuckDB's and libpq's messages) as ``***``."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return _URI_PASSWORD.sub(r"\1***@", _PASSWORD.sub(r"\1***", message))


def verdict(exc: BaseException) -> Verdict | None:
    """``transient`` or ``terminal`` for a failure of PostgreSQL or DuckDB; None for anything else.

    Projectionist's own errors carry their verdict (``retryable``); a lost DuckLake commit race
    (``duckdb.TransactionException``) is transient.
    """
    if isinstance(exc, ProjectionistError):
        return "transient" if exc.retryable else "terminal"
    psycopg = sys.modules.get("psycopg")  # not imported: the failure cannot be one of its errors
    if psycopg is not None and isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state:
            transient = state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
            return "transient" if transient else "terminal"
        return _by_text(str(exc)) or ("transient" if isinstance(exc, psycopg.OperationalError) else "terminal")
    if isinstance(exc, duckdb.Error) and not isinstance(exc, duckdb.InterruptException):
        # An INTERNAL error is a DuckDB assertion; the one seen in practice is DuckLake's scan of
        # inlined rows after its catalog connection dropped (a PostgreSQL restart), which a retry
        # on a new connection gets past. A deterministic one is then retried with backoff, one
        # line each time, rather than stopping a service on what was most likely a restart.
        if isinstance(exc, duckdb.TransactionException | duckdb.InternalException):
            return "transient"
        return _by_text(str(exc)) or "terminal"
    return None


def _by_text(message: str) -> Verdict | None:
    text = " ".join(message.lower().split())
    if _TERMINAL_TEXT.search(text):
        return "terminal"
    if _TRANSIENT_TEXT.search(text):
        return "transient"
    return None


def translate(
    exc: BaseException,
    what: str,
    *,
    fix: str = "",
    wait: str = "",
    transient: type[TransientError] = StoreUnavailableError,
    terminal: type[TerminalError] = ConfigurationError,
    secrets: tuple[str, ...] = (),
) -> ProjectionistError:
    """``exc`` as a Projectionist error naming ``what`` failed, then ``fix`` (terminal) or ``wait`` (transient).

    ``secrets`` (passwords, DSNs) are replaced by ``***`` in the message.
    """
    if isinstance(exc, ProjectionistError):
        return exc
    why = scrub(reason(exc), secrets)
    if verdict(exc) == "transient":
        return transient(f"{what}: {why}" + (f". {wait}" if wait else ""))
    return terminal(f"{what}: {why}" + (f". {fix}" if fix else ""))


@contextmanager
def translated(
    what: str,
    *,
    fix: str = "",
    wait: str = "",
    transient: type[TransientError] = StoreUnavailableError,
    terminal: type[TerminalError] = ConfigurationError,
    secrets: tuple[str, ...] = (),
) -> Iterator[None]:
    """Turn PostgreSQL and DuckDB failures inside the block into Projectionist errors (see :func:`translate`)."""
    try:
        yield
    except Exception as exc:
        psycopg = sys.modules.get("psycopg")
        if not isinstance(exc, duckdb.Error) and (psycopg is None or not isinstance(exc, psycopg.Error)):
            raise
        raise translate(exc, what, fix=fix, wait=wait, transient=transient, terminal=terminal, secrets=secrets) from exc
