"""Emmett's tables, written by Emmett's own npm package, read through the adapter."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from eventstore.adapters import ADAPTER_SCHEMA, EmmettAdapter
from eventstore.adapters.writers import (
    EMMETT_WRITER_DIR,
    EmmettAppend,
    append_demo_shop_emmett,
    emmett_append,
    run_emmett_writer,
    start_emmett_writer,
)
from eventstore.connection import connect
from eventstore.demo import generate_carts
from eventstore.errors import ConfigurationError
from eventstore.positions import checkpoint_of
from tests.eventstore.adapters_support import EmmettStore
from tests.eventstore.contract import ReaderContract, read_all

pytestmark = pytest.mark.skipif(
    not (EMMETT_WRITER_DIR / "node_modules").exists(),
    reason=f"Emmett's npm package is not installed: npm ci --prefix {EMMETT_WRITER_DIR}",
)


@pytest.fixture()
def emmett_dsn(fresh_database: str) -> str:
    """A database whose Emmett schema was created by Emmett itself."""
    assert run_emmett_writer(fresh_database, []) == 0
    return fresh_database


class TestEmmettAdapter(ReaderContract):
    @pytest.fixture()
    def store(self, emmett_dsn: str) -> Iterator[EmmettStore]:  # type: ignore[override]
        store = EmmettStore(emmett_dsn)
        yield store
        store.close()

    def test_batches_map_emmett_columns(self, store: EmmettStore) -> None:
        run_emmett_writer(
            store.dsn,
            [
                EmmettAppend(
                    "cart-42",
                    [{"type": "CartOpened", "data": {"customer_id": "c-1"}, "metadata": {"correlationId": "corr"}}],
                )
            ],
        )
        with store.writer() as conn:  # a command in the same table: not an event, not read
            conn.execute(
                "SELECT emt_append_to_stream(ARRAY['cmd-1'], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb], ARRAY['1'], "
                "ARRAY['ConfirmCart'], ARRAY['C'], 'cart-42', 'cart', NULL, 'emt:default')"
            )
            conn.commit()
        [row] = [r for b in store.reader().read() for r in b.to_pylist()]
        assert list(row) == ADAPTER_SCHEMA.names
        assert (row["stream_id"], row["stream_type"], row["stream_version"]) == ("cart-42", "cart", 1)
        assert (row["event_type"], row["event_version"]) == ("CartOpened", 1)
        assert json.loads(row["data"]) == {"customer_id": "c-1"}
        assert json.loads(row["metadata"])["correlation_id"] == "corr"
        assert row["transaction_id"] > 0 and row["tenant_id"] is None and row["is_archived"] is False

    def test_held_append_of_emmetts_own_writer(self, store: EmmettStore) -> None:
        """Emmett's appendToStream held open in its beforeCommitHook, while another process commits."""
        run_emmett_writer(store.dsn, [EmmettAppend("cart-early", [{"type": "A", "data": {}}])])
        slow = start_emmett_writer(store.dsn)
        assert slow.stdin is not None and slow.stdout is not None
        try:
            slow.stdin.write(json.dumps({"stream": "cart-slow", "events": [{"type": "B", "data": {}}], "hold": True}))
            slow.stdin.write("\n")
            slow.stdin.flush()
            assert json.loads(slow.stdout.readline()) == {"held": "cart-slow"}
            run_emmett_writer(store.dsn, [EmmettAppend("cart-late", [{"type": "C", "data": {}}])])
            reader = store.reader()
            first = [r["stream_id"] for b in reader.read() for r in b.to_pylist()]
            assert first == ["cart-early"], "read past Emmett's open transaction"
            checkpoint = reader.head().last
            slow.stdin.write(json.dumps({"release": "cart-slow"}) + "\n")
            slow.stdin.close()
            assert slow.wait(timeout=30) == 0
        finally:
            if slow.poll() is None:
                slow.kill()
                slow.wait()
            slow.stdout.close()
            if slow.stderr is not None:
                slow.stderr.close()
        rest = [r["stream_id"] for b in reader.read(checkpoint) for r in b.to_pylist()]
        # Checkpoint order is transaction-id order: the held append's transaction began first.
        assert rest == ["cart-slow", "cart-late"]

    def test_concurrent_appends_of_emmetts_writer_followed_by_the_reader(self, store: EmmettStore) -> None:
        streams, steps = 40, 3
        appends = [
            EmmettAppend(f"cart-{s}", [{"type": "Step", "data": {"k": k}}], expected_version=k)
            for k in range(steps)
            for s in range(streams)
        ]
        reader = store.reader()
        seen: list[tuple[str, int]] = []
        checkpoint = read_all(reader)[1]
        done = threading.Event()

        def follow() -> None:
            nonlocal checkpoint
            while not done.is_set():
                for batch in reader.read(checkpoint, batch_size=25):
                    streams = batch.column("stream_id").to_pylist()
                    seen.extend(zip(streams, batch.column("stream_version").to_pylist(), strict=True))
                    checkpoint = checkpoint_of(batch)

        follower = threading.Thread(target=follow)
        follower.start()
        try:
            assert run_emmett_writer(store.dsn, appends) == streams * steps
        finally:
            done.set()
            follower.join()
        seen.extend((r["stream_id"], r["stream_version"]) for b in reader.read(checkpoint) for r in b.to_pylist())
        assert sorted(seen) == sorted((f"cart-{s}", k + 1) for s in range(streams) for k in range(steps))

    def test_demo_shop_through_emmetts_writer(self, emmett_dsn: str) -> None:
        result = append_demo_shop_emmett(emmett_dsn, events=120, seed=5)
        with EmmettAdapter(emmett_dsn) as reader:
            rows = [r for b in reader.read() for r in b.to_pylist()]
        assert len(rows) == result.events
        expected = {(c.stream_id, n + 1, e.event_type) for c in generate_carts(120, 5) for n, e in enumerate(c.events)}
        assert {(r["stream_id"], r["stream_version"], r["event_type"]) for r in rows} == expected
        assert {r["stream_type"] for r in rows} == {"cart"}
        assert all(json.loads(r["metadata"]).get("correlation_id") for r in rows)


def test_emmett_before_0_38_is_named(fresh_database: str) -> None:
    with connect(fresh_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE emt_events (stream_id text, global_position bigint)")
    with pytest.raises(ConfigurationError, match=r"Emmett release before 0\.38"):
        EmmettAdapter(fresh_database)


def test_sql_append_matches_emmetts_writer(emmett_dsn: str) -> None:
    with connect(emmett_dsn) as conn:
        emmett_append(conn, "cart-1", [{"type": "A", "data": {"x": 1}}])
        conn.commit()
    run_emmett_writer(emmett_dsn, [EmmettAppend("cart-1", [{"type": "B", "data": {}}], expected_version=1)])
    with EmmettAdapter(emmett_dsn) as reader:
        assert [r["stream_version"] for b in reader.read() for r in b.to_pylist()] == [1, 2]
