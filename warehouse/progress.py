"""Progress by events inside long DuckDB statements, for bars and logs.

A rebuild commits its chunks one by one, but the common rebuild is a single chunk: counted by
commits, its progress jumps from 0 to 100 %. :class:`EventProgress` also reports the events
*being* computed: while a chunk of ``n`` events runs, a daemon thread polls DuckDB's own
``query_progress()`` of the connection (the share of the statement's scan done, which DuckDB
reports only with ``enable_progress_bar`` on; its printing stays off) and reports that share of
``n``, held below the chunk's end until the chunk commits. Reports only ever move forward.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

import duckdb

__all__ = ["LOG_SECONDS", "EventProgress", "every"]

#: Seconds between two progress lines in a log.
LOG_SECONDS = 5.0

#: Seconds between two polls of the running statement's progress.
POLL_SECONDS = 0.1


class EventProgress:
    """Report events done to ``advance`` (called with the increment, as ``click``'s bar ``update`` takes).

    Use as a context manager around the work; :meth:`begin` announces the events the next
    statements compute, :meth:`commit` the events committed. With ``advance`` None it does nothing.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, advance: Callable[[int], None] | None) -> None:
        self._con = con
        self._advance = advance
        self._lock = threading.Lock()
        self._committed = 0
        self._running = 0  # events of the chunk being computed
        self._seen = 0  # of them, those a body said it went through (a fold, in Python)
        self._share = 0.0  # of them, the share DuckDB last reported scanned, in %
        self._reported = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._restore: list[str] = []

    def __enter__(self) -> EventProgress:
        if self._advance is None:
            return self
        settings = ("enable_progress_bar", "enable_progress_bar_print")
        before = self._con.execute(f"SELECT {', '.join(f'current_setting({s!r})' for s in settings)}").fetchone()
        assert before is not None
        self._restore = [f"SET {s} = {str(bool(v)).lower()}" for s, v in zip(settings, before, strict=True)]
        self._con.execute("SET enable_progress_bar = true")
        self._con.execute("SET enable_progress_bar_print = false")
        self._thread = threading.Thread(target=self._poll, name="projectionist-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        for statement in self._restore:
            self._con.execute(statement)

    def begin(self, events: int) -> None:
        """The next statements compute ``events`` events (a chunk)."""
        with self._lock:
            self._running, self._seen, self._share = events, 0, 0.0

    def seen(self, events: int) -> None:
        """A body went through ``events`` more events of the running chunk (for bodies that loop in Python)."""
        with self._lock:
            self._seen += events
            self._report_running()

    def commit(self, events: int) -> None:
        """``events`` more events are committed (a chunk, or what an earlier run committed)."""
        with self._lock:
            self._committed += events
            self._running = 0
            self._report(self._committed)

    def _report_running(self) -> None:
        # Never the chunk's end: that is reached only when it commits.
        if self._running:
            part = max(int(self._running * self._share / 100), self._seen)
            self._report(self._committed + min(part, self._running - 1))

    def _report(self, done: int) -> None:
        # Under the lock: the poller and the committing thread never call ``advance`` at once.
        if self._advance is not None and done > self._reported:
            self._advance(done - self._reported)
            self._reported = done

    def _poll(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                share = self._con.query_progress()
            except duckdb.Error:
                continue  # no statement running, or the connection is between statements
            with self._lock:
                if share > self._share:
                    self._share = share
                    self._report_running()


def every(seconds: float, line: Callable[[int], None]) -> Callable[[int], None]:
    """An ``advance`` callback that adds up the increments and calls ``line`` with the total done so far,
    at most once every ``seconds`` (for logs, where a bar has no place)."""
    done = 0
    last = time.monotonic()

    def advance(events: int) -> None:
        nonlocal done, last
        done += events
        if time.monotonic() - last >= seconds:
            last = time.monotonic()
            line(done)

    return advance
