"""The contract every event store reader honours, written once and run against each store.

A subclass provides a ``store`` fixture returning a :class:`StoreUnderTest`: how to append
events the store's own way inside a caller's transaction, and the reader to check. Stores
that cannot hold an undecodable event return None from ``append_undecodable`` and skip that
test; a store whose writers serialize on a table lock overrides the held-transaction test.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
import pyarrow as pa
import pytest

from eventstore.adapters import bad_rows, raise_for_bad_rows
from eventstore.errors import UndecodableEventError
from eventstore.positions import START, Checkpoint, Head, checkpoint_of


class Reader(Protocol):
    def head(self) -> Head: ...

    def read(
        self, after: Checkpoint = START, *, batch_size: int = ..., until: Head | None = ...
    ) -> Iterator[pa.RecordBatch]: ...

    def close(self) -> None: ...


class StoreUnderTest(Protocol):
    def writer(self) -> psycopg.Connection[Any]:
        """A new non-autocommit connection for appending."""
        ...

    def append(self, conn: psycopg.Connection[Any], stream_id: str, count: int) -> list[str]:
        """Append ``count`` events to ``stream_id`` in ``conn``'s transaction (no commit); return their ids."""
        ...

    def append_versioned(
        self, conn: psycopg.Connection[Any], stream_id: str, event_type: str, versions: list[int]
    ) -> list[str]:
        """Append one ``event_type`` event per entry of ``versions``, at that event version; return ids."""
        ...

    def append_undecodable(self, conn: psycopg.Connection[Any], stream_id: str) -> str | None:
        """Append one event whose payload the store's reader cannot decode; None if the store cannot hold one."""
        ...

    def reader(self) -> Reader: ...


def read_all(reader: Reader, after: Checkpoint = START, batch_size: int = 1000) -> tuple[list[str], Checkpoint]:
    """Event ids read after ``after`` up to the safe head, and the checkpoint to resume from."""
    ids: list[str] = []
    checkpoint = after
    previous = after
    for batch in reader.read(after, batch_size=batch_size):
        assert batch.num_rows <= batch_size
        pairs = list(
            zip(
                batch.column("transaction_id").to_pylist(),
                batch.column("global_position").to_pylist(),
                strict=True,
            )
        )
        for pair in pairs:
            current = Checkpoint(*pair)
            assert current > previous, f"{current} does not follow {previous}: not in checkpoint order"
            previous = current
        ids.extend(str(v) for v in batch.column("event_id").to_pylist())
        checkpoint = checkpoint_of(batch)
    return ids, checkpoint


class ReaderContract:
    """Ordering, gap safety, rollback, resume and concurrency for one store's reader."""

    #: True when the store's writers take a table lock, so a second writer waits for the first.
    writers_serialize = False

    @pytest.fixture()
    def store(self) -> StoreUnderTest:
        raise NotImplementedError

    def commit_events(self, store: StoreUnderTest, stream_id: str, count: int) -> list[str]:
        with store.writer() as conn:
            ids = store.append(conn, stream_id, count)
            conn.commit()
        return ids

    def test_empty_store_reads_nothing(self, store: StoreUnderTest) -> None:
        reader = store.reader()
        assert read_all(reader) == ([], START)
        assert reader.head().last == START

    def test_reads_every_committed_event_in_order(self, store: StoreUnderTest) -> None:
        expected = []
        for n in range(5):
            expected += self.commit_events(store, f"s-{n}", 3)
        reader = store.reader()
        ids, checkpoint = read_all(reader, batch_size=4)
        assert ids == expected
        assert reader.head().last == checkpoint

    def test_the_head_keeps_one_session_and_replaces_one_the_server_closed(self, store: StoreUnderTest) -> None:
        """follow reads the head every cycle on one kept session; one the server ended is replaced, with no error."""
        self.commit_events(store, "kept", 2)
        reader = store.reader()
        owner = getattr(reader, "reader", reader)  # the native adapter reads through its NativeReader
        first = reader.head()
        kept = owner._session
        assert kept is not None
        pid = kept.info.backend_pid
        assert reader.head() == first and owner._session is kept  # the same session, not a new connection
        # The server ends the idle session (a restart, idle_session_timeout): the next head connects again.
        with store.writer() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            admin.commit()
        assert reader.head() == first
        assert owner._session is not None and owner._session.info.backend_pid != pid
        reader.close()
        assert owner._session is None

    def test_open_transaction_holds_the_reader_back_until_it_commits(self, store: StoreUnderTest) -> None:
        before = self.commit_events(store, "early", 2)
        slow = store.writer()
        held = store.append(slow, "slow", 3)  # positions taken now, committed later
        after = self.commit_events(store, "late", 2)
        reader = store.reader()
        first, checkpoint = read_all(reader)
        assert first == before, "the reader moved past an open transaction's events"
        assert reader.head().events_pending
        slow.commit()
        slow.close()
        rest, _ = read_all(reader, checkpoint)
        assert sorted(first + rest) == sorted(before + held + after)
        assert len(set(first + rest)) == len(first + rest)

    def test_rolled_back_transaction_never_stalls_the_reader(self, store: StoreUnderTest) -> None:
        doomed = store.writer()
        store.append(doomed, "doomed", 3)
        kept: list[str] = []
        writer = threading.Thread(target=lambda: kept.extend(self.commit_events(store, "kept", 2)))
        writer.start()
        if not self.writers_serialize:
            writer.join()  # kept commits while the doomed transaction is still open
        doomed.rollback()
        doomed.close()
        writer.join()
        ids, _ = read_all(store.reader())
        assert ids == kept

    def test_resume_from_checkpoint_returns_exactly_the_rest(self, store: StoreUnderTest) -> None:
        for n in range(6):
            self.commit_events(store, f"s-{n}", 4)
        reader = store.reader()
        batches = list(reader.read(START, batch_size=5))
        everything = [str(v) for b in batches for v in b.column("event_id").to_pylist()]
        middle = checkpoint_of(batches[2])
        rest, end = read_all(reader, middle)
        assert rest == everything[15:]
        assert read_all(reader, end) == ([], end)

    def test_concurrent_writers_lose_and_duplicate_nothing(self, store: StoreUnderTest, full_size: bool) -> None:
        writers, transactions = (8, 400) if full_size else (4, 40)
        committed: list[str] = []
        lock = threading.Lock()
        done = threading.Event()
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            rng = random.Random(worker)
            try:
                with store.writer() as conn:
                    for t in range(transactions):
                        ids = store.append(conn, f"w{worker}-{t}", rng.randint(1, 4))
                        if rng.random() < 0.1:
                            conn.rollback()
                            continue
                        conn.commit()
                        with lock:
                            committed.extend(ids)
            except BaseException as exc:
                errors.append(exc)

        reader = store.reader()
        seen: list[str] = []
        checkpoint = START

        def read_loop() -> None:
            nonlocal checkpoint
            try:
                while not done.is_set():
                    ids, checkpoint = read_all(reader, checkpoint, batch_size=50)
                    seen.extend(ids)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        follower = threading.Thread(target=read_loop)
        follower.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done.set()
        follower.join()
        assert not errors, errors
        ids, _ = read_all(reader, checkpoint)
        seen.extend(ids)
        assert len(seen) == len(set(seen)), "an event was read twice"
        assert set(seen) == set(committed), "an event was lost (or a rolled-back one read)"

    def test_event_versions_come_through_as_written(self, store: StoreUnderTest) -> None:
        with store.writer() as conn:
            ids = store.append_versioned(conn, "cart-upcast", "ItemAdded", [1, 2, 1, 2])
            conn.commit()
        # A store may add its own events around them (an aggregate's creation event): keep ours.
        rows = [r for b in store.reader().read() for r in b.to_pylist() if r["event_id"] in set(ids)]
        assert [r["event_id"] for r in rows] == ids
        # One event type across both versions (stores spell it their way: ItemAdded, item_added).
        assert len({r["event_type"] for r in rows}) == 1
        assert [r["event_version"] for r in rows] == [1, 2, 1, 2]

    def test_undecodable_event_is_a_bad_row_in_its_place(self, store: StoreUnderTest) -> None:
        with store.writer() as conn:
            before = store.append(conn, "good-1", 1)
            bad = store.append_undecodable(conn, "bad")
            if bad is None:
                conn.rollback()
                pytest.skip("this store cannot hold an event its reader cannot decode")
            after = store.append(conn, "good-2", 1)
            conn.commit()
        batches = list(store.reader().read())
        ids = [str(v) for b in batches for v in b.column("event_id").to_pylist()]
        assert ids == [*before, bad, *after], "a bad row must keep its place in checkpoint order"
        found = [row for b in batches for row in bad_rows(b)]
        assert [row.event_id for row in found] == [bad]
        assert found[0].reason
        with pytest.raises(UndecodableEventError):
            raise_for_bad_rows(batches)
