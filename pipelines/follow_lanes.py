"""``follow``'s second lane: the versions whose keys many streams share, advanced beside the cycle.

A version keyed by stream costs what its new events cost. A version whose key many streams
contribute to (a day's revenue, a product's sales) recomputes each touched key from every stream
of that key, so its advance grows with the key: today's row of ``daily_revenue`` is computed from
every cart confirmed today, in each cycle. Advanced in the cycle, that cost held every other
version back, so a cart's row reached ``analytics.cart_summary`` only after today's revenue was
recomputed. Here they advance in a thread of their own, on a lake connection of their own (one
DuckDB thread, leaving the other cores to the cycle), woken after each cycle that landed events:
the cycle's versions stay as fresh as their own cost allows, and these catch up as fast as theirs
does, several cycles' events at a time. Each version's checkpoint is its own, as it always was.

The lane also does the cycle's housekeeping (:meth:`WideLane.chore`: compacting ``raw.events``,
tidying the tables the cycles change), off the cycle's path: a cycle waits only for a tidy that asked
before it (:class:`Turns`), never for the compaction; with no such versions it exists for that alone.

A transient failure (the lake's catalog restarting) is logged once and retried with backoff; a
terminal one is handed to the cycle, which stops ``follow`` with it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import duckdb
import psycopg

from eventstore.errors import ProjectionistError
from eventstore.failures import first_line, translate
from projections import Registry
from warehouse.lake import LakeConfig, open_lake
from warehouse.versions import project
from warehouse.versions.cycle import StreamMemory
from warehouse.versions.incremental import StreamKeysCache

__all__ = ["Turns", "WideLane", "wide_names"]


def wide_names(registry: Registry) -> list[str]:
    """The projections with a registered version not keyed by stream (their keys gather many streams)."""
    return [n for n in registry.names() if any(not registry.get(n, v).keyed_by_stream for v in registry.versions(n))]


#: How much lower than the cycle's the lane's CPU priority is (a nice value, added to the process's).
LANE_NICENESS = 10


def _yield_cpu(niceness: int) -> bool:
    """Lower the calling thread's CPU priority by ``niceness`` (Linux, where a thread has its own nice value).

    The lane's passes grow with the day (today's revenue is recomputed from every cart of the day), and
    at full priority they took the CPU the cycle needed: under 5,000 appends/s the cycle's p95 rose from
    0.76 to 1.09 s over 90 s, and stayed flat at 0.62-0.77 s without the lane (measured). The lane's DuckDB
    runs one thread, this one, so the kernel now gives the lane what the cycle, PostgreSQL and the writers
    leave. Elsewhere (no per-thread nice value) nothing changes. True when lowered.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness))
    except OSError:
        return False
    return True


def _clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


class Turns:
    """The cycle's lake writes and the lane's housekeeping, one at a time, housekeeping first when it asked first.

    DuckLake (1.5) does not see a conflict between a transaction that deletes a row from a data file (an
    UPDATE of ``meta.projection_versions``, of ``meta.checkpoints``, a projection's replaced keys) and one
    that rewrites or merges that file meanwhile (``ducklake_rewrite_data_files``,
    ``ducklake_merge_adjacent_files``): both commit, and the deleted row is back, beside its new version.
    Measured: a 60-second freshness run ended with a version recorded twice in ``meta.projection_versions``,
    and the next cycle advanced the stale row too, writing 500 carts twice into ``cart_summary``. So the
    housekeeping (:meth:`WideLane.chore`) never runs while a cycle writes, and a cycle waits for housekeeping
    that asked before it (20-100 ms every tenth cycle), so that a loaded ``follow`` cannot starve it.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._asking = 0  # housekeeping waiting for its turn

    @contextlib.contextmanager
    def cycle(self) -> Iterator[None]:
        """The cycle's turn: after any housekeeping that is running or waiting."""
        with self._changed:
            while self._busy or self._asking:
                self._changed.wait()
            self._busy = True
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def housekeeping(self) -> Iterator[None]:
        """The lane's turn to rewrite files: once no cycle is writing."""
        with self._changed:
            self._asking += 1
            try:
                while self._busy:
                    self._changed.wait()
            finally:
                self._asking -= 1
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()


class WideLane:
    """A thread advancing ``names`` after each :meth:`kick`, until :meth:`close`."""

    def __init__(
        self,
        config: LakeConfig,
        registry: Registry,
        names: Sequence[str],
        log: Callable[[str], None],
        warn: Callable[[str], None],
        interval: float = 1.0,
        turns: Turns | None = None,
    ) -> None:
        self.config, self.registry, self.names = config, registry, list(names)
        self.turns = turns if turns is not None else Turns()  # shared with the cycle that kicks it
        self.log, self.warn, self.interval = log, warn, interval
        #: Terminal: the cycle raises it. A ProjectionistError, or a bug (any other exception) with its traceback.
        self.error: Exception | None = None
        self.advanced: frozenset[str] = frozenset()  # the projection tables it has written (kept tidy)
        self._chores: list[tuple[Callable[[duckdb.DuckDBPyConnection], object], bool]] = []
        self._cache = StreamKeysCache()
        self._memory = StreamMemory()
        self._lake: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._wanted = 0  # kicks so far
        self._done = 0  # the kick the last successful pass started after
        self._changed = threading.Condition(self._lock)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="projectionist-wide-lane", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        """Ask for a pass over the lake's newest checkpoint (one pass serves every kick before it)."""
        with self._changed:
            self._wanted += 1
            self._changed.notify_all()

    def chore(self, work: Callable[[duckdb.DuckDBPyConnection], object], *, exclusive: bool = True) -> None:
        """Run ``work(lake)`` on the lane's connection after its next pass (housekeeping off the cycle's path).

        ``exclusive``: ``work`` rewrites files of a table the cycle deletes rows from, so it waits for its turn
        (:class:`Turns`); a table the cycle only appends to (``raw.events``) needs none. ``work`` reports its
        own failures; one it lets through is a line here, never the lane's failure.
        """
        with self._changed:
            self._chores.append((work, exclusive))
            self._wanted += 1
            self._changed.notify_all()

    def raise_terminal(self) -> None:
        """Raise the lane's terminal failure, if it had one."""
        if self.error is not None:
            raise self.error

    def settle(self, timeout: float = 120.0) -> bool:
        """Wait until a pass started after every kick so far is over: True, or False if the lane failed for good."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.error is None and self._done < self._wanted and not self._stopping:
                if time.monotonic() >= deadline:
                    return False
                self._changed.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            return self._done >= self._wanted

    def close(self, drain: bool = True, timeout: float = 120.0) -> None:
        """Stop the thread; with ``drain``, after :meth:`settle` (at most ``timeout`` s)."""
        settled = drain and self.settle(timeout)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
            lake = self._lake
        if lake is not None and not settled:
            with contextlib.suppress(duckdb.Error):
                lake.interrupt()  # thread-safe: a pass under way stops at its next vector
        self._thread.join(timeout=30)

    def _run(self) -> None:
        _yield_cpu(LANE_NICENESS)
        failures = 0
        outage: float | None = None
        while True:
            with self._changed:
                while not self._stopping and self._done >= self._wanted:
                    self._changed.wait()
                if self._stopping:
                    break
                target = self._wanted
            started = time.monotonic()
            try:
                if self._lake is None:
                    self._lake = open_lake(self.config)
                    self._lake.execute("SET threads = 1")  # the other cores are the cycle's
                results = (
                    project(self._lake, self.registry, names=self.names, cache=self._cache, memory=self._memory)
                    if self.names
                    else []
                )
            except (duckdb.Error, psycopg.Error, ProjectionistError) as exc:
                if isinstance(exc, duckdb.InterruptException) or self._stopping:
                    break
                error = exc if isinstance(exc, ProjectionistError) else translate(exc, "lost the lake's catalog")
                self._drop()
                if not error.retryable:
                    with self._changed:
                        self.error = error
                        self._changed.notify_all()
                    break
                failures += 1
                if outage is None:
                    outage = time.monotonic()
                    self.warn(f"{_clock()} {', '.join(self.names)}: {error} (transient: retrying with backoff)")
                with self._changed:
                    self._changed.wait(min(30.0, self.interval * 2**failures))
                continue
            except Exception as exc:  # a bug, not an outage: follow stops on it as it would on one in the cycle
                self._drop()
                with self._changed:
                    self.error = exc
                    self._changed.notify_all()
                break
            if outage is not None:
                self.warn(f"{_clock()} {', '.join(self.names)}: recovered after {time.monotonic() - outage:.1f} s")
                outage, failures = None, 0
            self.advanced = self.advanced | {f"{r.name}_v{r.version}" for r in results}  # a new set: read elsewhere
            self._run_chores()  # before the pass counts as done: settle() and a draining close() wait for them
            with self._changed:
                self._done = target
                self._changed.notify_all()
            if results:
                projected = ", ".join(f"{r.name} v{r.version} {r.keys:,} keys" for r in results)
                events = max(r.events for r in results)
                self.log(f"{_clock()} projected {projected} ({events:,} events, {time.monotonic() - started:.1f} s)")
        self._drop()

    def _run_chores(self) -> None:
        with self._changed:
            chores, self._chores = self._chores, []
        for work, exclusive in chores:
            if self._stopping or self._lake is None:
                return
            try:
                with self.turns.housekeeping() if exclusive else contextlib.nullcontext():  # see Turns
                    work(self._lake)
            except Exception as exc:  # a line, as the chore's contract says; a bug too: tidying is not the read model
                if isinstance(exc, duckdb.InterruptException):
                    return
                known = isinstance(exc, (duckdb.Error, psycopg.Error, ProjectionistError))
                self.warn(f"{_clock()} housekeeping failed: {first_line(exc) if known else repr(exc)}")
                if isinstance(exc, duckdb.InternalException):
                    # Seen when a flush lost a commit race with a cycle ("Failed to commit DuckLake transaction"):
                    # the next pass starts on a new connection rather than on one DuckDB may have invalidated.
                    self._drop()
                    return

    def _drop(self) -> None:
        if self._lake is not None:
            with contextlib.suppress(duckdb.Error):
                self._lake.close()
            self._lake = None
