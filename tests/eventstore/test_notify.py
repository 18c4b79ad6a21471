"""Wake-ups: the trigger SQL of docs/operations.md makes a commit wake a listener, a SELECT-only role may
listen, and a listener whose session is cut listens again by itself."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from eventstore.connection import connect
from eventstore.errors import ConfigurationError
from eventstore.native_store import NewEvent, append
from eventstore.notify import Listener, create_notify_trigger, notify_trigger_sql
from eventstore.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
CHANNEL = "projectionist_events"


def _documented_sql() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Wake-ups: LISTEN/NOTIFY", 1)[1]
    found = re.search(r"^```sql\n(.*?)^```", section, re.DOTALL | re.MULTILINE)
    assert found, "docs/operations.md lost its trigger SQL"
    return found.group(1)


def _append_one(dsn: str) -> None:
    with connect(dsn) as conn:
        append(conn, f"cart-{uuid.uuid4()}", "cart", [NewEvent("CartOpened", {"customer_id": "c1"})])
        conn.commit()


def test_the_documented_trigger_wakes_a_select_only_listener(store_dsn: str) -> None:
    documented = _documented_sql()
    assert documented.strip() == notify_trigger_sql("public", "events", CHANNEL)  # what `init --notify` runs
    reader = f"reader_{uuid.uuid4().hex[:8]}"
    with connect(store_dsn, autocommit=True) as conn:
        conn.execute(documented)  # as the store owner would, by hand
        conn.execute(f"CREATE ROLE {reader} LOGIN")
        conn.execute(f"GRANT SELECT ON public.events TO {reader}")
    reader_dsn = make_conninfo(store_dsn, user=reader, password="")
    listener = Listener(reader_dsn, CHANNEL)
    try:
        assert listener.wait(0) is True  # a fresh LISTEN: look at the store once, something may have been missed
        assert listener.wait(0.3) is False  # nothing committed: the wait is a plain timeout (the poll)
        _append_one(store_dsn)
        assert listener.wait(60) is True and listener.notifications == 1  # the commit, not the timeout
        assert listener.wait(0.3) is False  # one commit, one wake-up
    finally:
        listener.close()
        with connect(store_dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {reader}")
            conn.execute(f"DROP ROLE {reader}")


def test_a_listener_listens_again_after_its_session_is_cut(store_dsn: str) -> None:
    with connect(store_dsn) as conn:
        create_notify_trigger(conn, "public", "events", CHANNEL)
        create_notify_trigger(conn, "public", "events", CHANNEL)  # idempotent
    listener = Listener(store_dsn, CHANNEL)
    try:
        assert listener.wait(0) is True
        assert listener.conn is not None
        pid = listener.conn.info.backend_pid
        with connect(store_dsn, autocommit=True) as conn:  # as a server restart would, for this session
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert listener.wait(0.5) is False  # notices the loss: polls meanwhile
        assert listener.wait(0) is True  # listens again, and looks at the store at once
        _append_one(store_dsn)
        assert listener.wait(60) is True
        assert listener.conn is not None and listener.conn.info.backend_pid != pid
    finally:
        listener.close()


def test_a_bad_channel_name_is_refused_with_the_fix() -> None:
    with pytest.raises(ConfigurationError, match="PROJECTIONIST_NOTIFY_CHANNEL 'Shop-Events' is not a valid"):
        Settings.from_env({"PROJECTIONIST_NOTIFY_CHANNEL": "Shop-Events"})
