"""The native schema and the append API, on a real PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest

from eventstore.connection import connect
from eventstore.errors import ConcurrencyError, ConfigurationError, InvalidEventError
from eventstore.native_store import NewEvent, StreamAppend, append, append_streams, create_schema


def _count(dsn: str) -> int:
    with connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def test_schema_matches_the_contract(store_dsn: str) -> None:
    with connect(store_dsn) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default, is_identity FROM information_schema.columns "
            "WHERE table_name = 'events' ORDER BY ordinal_position"
        ).fetchall()
        indexes = [r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'events'")]
    by_name = {c[0]: c for c in columns}
    assert [c[0] for c in columns] == [
        "global_position",
        "transaction_id",
        "stream_id",
        "stream_type",
        "stream_version",
        "event_id",
        "event_type",
        "event_version",
        "data",
        "metadata",
        "recorded_at",
    ]
    assert by_name["global_position"][4] == "YES"
    assert by_name["transaction_id"][1] == "xid8" and "pg_current_xact_id" in by_name["transaction_id"][3]
    assert by_name["data"][1] == "jsonb" and by_name["metadata"][3].startswith("'{}'")
    assert "clock_timestamp" in by_name["recorded_at"][3]
    assert by_name["event_version"][3] == "1"
    assert any("(transaction_id, global_position)" in i for i in indexes)
    assert any("(stream_id, stream_version)" in i for i in indexes)
    assert any("(event_id)" in i for i in indexes)


def test_create_schema_is_idempotent_and_safe_concurrently(fresh_database: str) -> None:
    errors: list[BaseException] = []

    def init() -> None:
        try:
            with connect(fresh_database) as conn:
                create_schema(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=init) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with connect(fresh_database) as conn:
        create_schema(conn)
    assert _count(fresh_database) == 0


def test_append_assigns_versions_and_keeps_decimals_exact(store_dsn: str) -> None:
    with connect(store_dsn) as conn:
        v = append(conn, "cart-1", "cart", [NewEvent("CartOpened", {"customer_id": "c"})], expected_version=0)
        added = NewEvent("ItemAdded", {"unit_price": Decimal("19.90"), "quantity": 3})
        v = append(conn, "cart-1", "cart", [added], expected_version=v)
        rows = conn.execute(
            "SELECT stream_version, (data->>'unit_price')::numeric, transaction_id::text FROM events ORDER BY 1"
        ).fetchall()
    assert v == 2
    assert [r[0] for r in rows] == [1, 2]
    assert rows[1][1] == Decimal("19.9")
    assert rows[0][2] != rows[1][2], "each append call outside a transaction commits on its own"


def test_version_conflict_is_a_clear_error_and_writes_nothing(store_dsn: str) -> None:
    with connect(store_dsn) as conn:
        append(conn, "cart-1", "cart", [NewEvent("CartOpened", {})], expected_version=0)
        with pytest.raises(ConcurrencyError, match=r"'cart-1' is at version 1, not at the expected version 0"):
            append_streams(
                conn,
                [
                    StreamAppend("cart-2", "cart", [NewEvent("CartOpened", {})], 0),
                    StreamAppend("cart-1", "cart", [NewEvent("CartOpened", {})], 0),
                ],
            )
    assert _count(store_dsn) == 1


def test_racing_writer_is_caught_by_the_unique_constraint(store_dsn: str) -> None:
    with connect(store_dsn) as first, connect(store_dsn) as second:
        first.execute("SELECT 1")
        append(first, "cart-1", "cart", [NewEvent("CartOpened", {})], expected_version=0)
        second.execute("SET lock_timeout = '5s'")
        finished = threading.Event()
        caught: list[BaseException] = []

        def race() -> None:
            try:
                append(second, "cart-1", "cart", [NewEvent("CartOpened", {})], expected_version=0)
            except BaseException as exc:
                caught.append(exc)
            finished.set()

        thread = threading.Thread(target=race)
        thread.start()
        assert not finished.wait(0.3), "the second writer should wait on the first one's row"
        first.commit()
        thread.join()
    assert len(caught) == 1 and isinstance(caught[0], ConcurrencyError)
    assert "appended to concurrently" in str(caught[0])
    assert _count(store_dsn) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["not", "an", "object"], "is a list, not a JSON object"),
        ("text", "is a str, not a JSON object"),
        ({"price": float("nan")}, "cannot be stored as JSON"),
        ({"when": object()}, "cannot be stored as JSON"),
    ],
)
def test_malformed_payload_is_refused_and_nothing_written(store_dsn: str, data: object, message: str) -> None:
    with connect(store_dsn) as conn, pytest.raises(InvalidEventError, match=message):
        append(conn, "cart-1", "cart", [NewEvent("CartOpened", {}), NewEvent("Bad", data)])  # type: ignore[arg-type]
    assert _count(store_dsn) == 0


def test_duplicate_event_id_is_refused(store_dsn: str) -> None:
    event = NewEvent("CartOpened", {}, event_id=uuid.uuid4())
    with connect(store_dsn) as conn:
        append(conn, "cart-1", "cart", [event])
        with pytest.raises(InvalidEventError, match="event id is already stored"):
            append(conn, "cart-2", "cart", [event])
    assert _count(store_dsn) == 1


def test_bad_identifiers_are_refused_before_any_sql(store_dsn: str) -> None:
    with connect(store_dsn) as conn, pytest.raises(ConfigurationError, match="not a valid identifier"):
        create_schema(conn, schema="public; DROP TABLE events")
    assert _count(store_dsn) == 0
