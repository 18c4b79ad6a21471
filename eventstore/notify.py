"""Wake-ups from the event store: a trigger NOTIFYs a channel when events commit, a reader LISTENs on it.

The trigger is the store owner's choice (docs/operations.md#wake-ups-listennotify): reading never writes,
so only ``projectionist init --notify`` creates it. One NOTIFY per inserting statement, with an empty
payload: PostgreSQL delivers it at COMMIT and folds a transaction's identical notifications into one,
so a writer pays a few microseconds per transaction. LISTEN needs no privilege (a SELECT-only role
may), and a missing trigger costs nothing but the wake-ups: the reader's timeout is then its poll.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from eventstore.connection import connect
from eventstore.errors import ProjectionistError
from eventstore.settings import validate_identifier

__all__ = ["Listener", "create_notify_trigger", "notify_trigger_sql"]

#: The longest a wait blocks before it checks whether it should stop (a signal sets a flag).
_SLICE = 0.25


def notify_trigger_sql(schema: str, table: str, channel: str) -> str:
    """The SQL that makes inserts into ``schema.table`` NOTIFY ``channel`` once per statement (idempotent)."""
    for value, what in ((schema, "event store schema"), (table, "event store table"), (channel, "notify channel")):
        validate_identifier(value, what)
    function = f"{schema}.{table}_notify_{channel}"
    return (
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN PERFORM pg_notify('{channel}', ''); RETURN NULL; END $$;\n"
        f"DROP TRIGGER IF EXISTS {table}_notify_{channel} ON {schema}.{table};\n"
        f"CREATE TRIGGER {table}_notify_{channel} AFTER INSERT ON {schema}.{table}\n"
        f"    FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
    )


def create_notify_trigger(conn: psycopg.Connection[Any], schema: str, table: str, channel: str) -> None:
    """Create (or replace) the NOTIFY trigger on the store's table, in one transaction."""
    text = notify_trigger_sql(schema, table, channel)  # identifiers validated: plain lower-case names
    with conn.transaction():
        # Concurrent `init`s would race on CREATE OR REPLACE FUNCTION ("tuple concurrently updated").
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('projectionist.create_schema'))")
        conn.execute(sql.SQL(text))  # built from validated plain identifiers only


class Listener:
    """A store session LISTENing on a channel; :meth:`wait` returns early when a notification arrives.

    The session is opened lazily and again after any failure (a restart of the server): a wait that
    cannot listen just sleeps its timeout, so a follower without wake-ups keeps polling.
    """

    def __init__(self, dsn: str | Callable[[], str], channel: str) -> None:
        self.dsn = dsn  # or how to get it (an embedded server is started, again after a restart, on demand)
        self.channel = validate_identifier(channel, "notify channel")
        self.conn: psycopg.Connection[Any] | None = None
        self.notifications = 0  # received so far (what the tests and the benchmark look at)

    def _listen(self) -> bool:
        """Open the session and LISTEN; True when it just (re)connected (a notification may have been missed)."""
        if self.conn is not None:
            return False
        conn = connect(self.dsn() if callable(self.dsn) else self.dsn, autocommit=True)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return True

    def wait(self, timeout: float, stopped: Callable[[], bool] | None = None) -> bool:
        """Block up to ``timeout`` s; True when woken by a notification (or by a fresh LISTEN), False on timeout.

        ``stopped`` (a callable) is checked every quarter second: a signal ends the wait soon.
        """
        deadline = time.monotonic() + timeout
        try:
            if self._listen():
                return True  # events committed while nobody listened were not announced: look now
        except (ProjectionistError, psycopg.Error):
            self.close()
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (stopped is not None and stopped()):
                return False
            if self.conn is None:
                time.sleep(min(_SLICE, left))
                continue
            try:
                woke = False
                for _ in self.conn.notifies(timeout=min(_SLICE, left), stop_after=1):
                    woke = True
                if woke:
                    for _ in self.conn.notifies(timeout=0):  # a burst of commits is one wake-up
                        pass
                    self.notifications += 1
                    return True
            except psycopg.Error:
                self.close()  # the server went away: poll until the next wait listens again

    def close(self) -> None:
        """Close the session (errors of a broken one do not matter)."""
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None
