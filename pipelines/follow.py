"""``projectionist follow`` as a service: ingest and project in a loop that outlives outages.

Each cycle ingests what settled in the store and brings every projection version up to the lake's
checkpoint (the versions whose keys gather many streams in a second lane,
:mod:`pipelines.follow_lanes`, so that their cost does not hold the others back). A transient
failure (the store or the lake's catalog restarting, a connection lost, a busy catalog:
:mod:`eventstore.failures`) drops the connections, logs one line for the outage and waits with
jittered exponential backoff; the first cycle that succeeds again logs one line with how long it
lasted. Nothing is lost or read twice meanwhile: every commit carries its checkpoint, so a cycle cut
short leaves the lake before or after a commit, never between. A terminal failure (a wrong password,
a missing table, a poison event under policy ``stop``) ends the loop, as does a signal.

A writer transaction that stays open holds the safe head back (its events, and every later one,
wait until it ends): when it has held it for longer than ``holder_after`` seconds, one line names it.

Between cycles the follower waits on the store: it LISTENs on ``PROJECTIONIST_NOTIFY_CHANNEL`` and a
notification (the store's trigger, docs/operations.md#wake-ups-listennotify) starts the next cycle at
once; without one, ``interval`` is the poll. A cycle costs what changed: the event catalog is kept
inside the ingest's own commits, typed views are written only for a type or version never seen, and
a cycle that finds the store's head where the lake left it reads nothing from the lake (the lake
itself is looked at every ``lake_every`` such cycles, for what other processes changed there).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import duckdb
import psycopg

from eventstore.connection import event_store_dsn
from eventstore.errors import ProjectionistError
from eventstore.failures import first_line, translate
from eventstore.notify import Listener
from eventstore.positions import START, Checkpoint, Head, Holder
from eventstore.settings import Settings
from pipelines.follow_lanes import Turns, WideLane, wide_names
from projections import Registry
from projections.registry import declared_types, field_policy
from warehouse.analytics import DEFAULT_LONG_STREAM_THRESHOLD, refresh_analytics, untyped
from warehouse.event_catalog import add_new_events, ensure_event_catalog
from warehouse.feeds import DeliveryResult, deliver
from warehouse.ingest import (
    EventSource,
    IngestResult,
    LandedBatch,
    compact_over,
    drop_staged,
    ingest,
    lake_checkpoint,
)
from warehouse.lake import LakeConfig, open_lake
from warehouse.maintenance import tidy_table
from warehouse.sources import close_source, head_holder, open_source
from warehouse.versions import ProjectResult, project
from warehouse.versions.cycle import StreamMemory
from warehouse.versions.incremental import StreamKeysCache

__all__ = ["COMPACT_AFTER", "FOLLOW_BATCH", "MERGE_BELOW", "TIDY_META", "Follower", "backoff"]

#: The most events one ingest batch of a cycle carries (staged in memory on their way to the lake).
FOLLOW_BATCH = 100_000
#: raw.events' data files above which a cycle compacts them (checked every ``lake_every``-th ingest).
COMPACT_AFTER = 64
#: The meta tables the cycles change (their superseded rows are flushed out in turn, with the projection tables).
TIDY_META = ("checkpoints", "projection_versions", "ingest_commits", "event_catalog_types", "event_catalog_fields")
#: A projection table's file is rewritten without its deleted rows when they are this share of it (meta: any).
PROJECTION_DELETE_THRESHOLD = 0.25
#: Files the cycles' housekeeping merges are smaller than this (bytes): each merge costs what is new, not what
#: has grown (``maintain`` merges the rest); a projection table's merge holds the next cycle up meanwhile.
MERGE_BELOW = 16 * 1024 * 1024


def backoff(attempt: int, interval: float, ceiling: float = 30.0) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling from ``interval``, capped, ±50 % jitter.

    The jitter keeps several followers (or a follower and a Dagster retry) from hitting a server
    that just came back at the same instant.
    """
    base = min(max(ceiling, interval), interval * 2 ** (attempt - 1))
    return float(base * (0.5 + random.random()))


def _clock() -> str:
    return f"{datetime.now(UTC):%H:%M:%S}"


@dataclass
class Follower:
    """The follow loop's state: its connections (None while down), the outage it is in, the holder it reported."""

    settings: Settings
    registry: Registry
    log: Callable[[str], None]
    warn: Callable[[str], None]
    interval: float = 1.0
    holder_after: float = 30.0
    source: EventSource | None = None
    lake: duckdb.DuckDBPyConnection | None = None
    outage_since: float | None = None
    failures: int = 0
    reported_holder: tuple[int, int] | None = None
    holder_seen: dict[tuple[int, int], float] = field(default_factory=dict)
    long_stream_threshold: int = DEFAULT_LONG_STREAM_THRESHOLD
    landed: Checkpoint = START  # the lake's checkpoint after the last cycle's ingest
    delivered: list[DeliveryResult] = field(default_factory=list)  # the last cycle's feed deliveries
    delivery_error: str = ""  # the last cycle's delivery failure, reported once
    feeds: bool = True  # whether the last delivery pass found a consumer (until then: look)
    lake_every: int = 10  # a quiet store: the lake is still read every this many cycles
    quiet: int = 0  # cycles in a row that found nothing new in the store (and so skipped the lake)
    ingests: int = 0  # cycles that ran the ingest (every lake_every-th also checks whether to compact)
    written: set[str] = field(default_factory=set)  # projection tables the cycles advanced (kept tidy)
    turns: int = 0  # tables handed to the second lane for tidying (the next in turn: TIDY_META, then projections)
    tidied: int = 0  # of those, tidied (or failed, with its line) so far
    tidy_error: str = ""  # the last tidying failure, reported once
    listener: Listener | None = None
    typed: set[tuple[str, int]] = field(default_factory=set)  # event types and versions known to have their view
    unviewed: set[tuple[str, int]] = field(default_factory=set)  # landed, their view not checked or written yet
    stream_keys: StreamKeysCache = field(default_factory=StreamKeysCache)  # contributions, kept between cycles
    streams: StreamMemory = field(default_factory=StreamMemory)  # the lake's streams, kept between cycles
    wide: WideLane | None = None  # the versions whose keys gather many streams (pipelines.follow_lanes)
    lanes: tuple[list[str], list[str]] | None = None  # names advanced in the cycle, and in the wide lane
    columns: frozenset[str] | None = None  # the source's optional columns (ingest(columns=)), while it is open
    lake_turns: Turns = field(default_factory=Turns)  # the cycle's writes and the lane's housekeeping alternate

    def cycle(self) -> float:
        """One cycle; returns the seconds to wait before the next. Raises on a terminal failure."""
        started = time.monotonic()
        if self.wide is not None:
            self.wide.raise_terminal()  # the wide lane's terminal failure stops follow, as the cycle's would
        try:
            ingested, results = self._work()
            # On the store too: a restart now is an outage like any other, not the end of follow.
            self._watch_holder(ingested)
        except (duckdb.Error, psycopg.Error, ProjectionistError) as exc:
            if isinstance(exc, duckdb.InterruptException):
                raise
            where = "the lake's catalog" if "ducklake" in str(exc).lower() else "the event store or the lake"
            error = exc if isinstance(exc, ProjectionistError) else translate(exc, f"lost {where}")
            if not error.retryable:
                raise error from exc
            return self._failed(error)
        if self.outage_since is not None:
            down = time.monotonic() - self.outage_since
            cycles = f"{self.failures} failed cycle" + ("" if self.failures == 1 else "s")
            self.warn(f"{_clock()} recovered after {down:.1f} s ({cycles}); following again")
            self.outage_since, self.failures = None, 0
        if ingested.events or results:
            projected = ", ".join(f"{r.name} v{r.version} {r.keys:,} keys" for r in results) or "nothing"
            letters = sum(r.dead_letters for r in results)
            self.log(
                f"{_clock()} ingested {ingested.events:,} events (checkpoint {ingested.checkpoint}); "
                f"projected {projected}"
                + (f"; {letters:,} dead-lettered" if letters else "")
                + f" ({time.monotonic() - started:.1f} s)"
            )
        for delivery in self.delivered:  # feed consumers (docs/integration.md): a line for what was sent
            if delivery.changes or delivery.dead_letters:
                self.log(f"{_clock()} delivered {delivery.describe()}")
        return self.interval

    def _work(self) -> tuple[IngestResult, list[ProjectResult]]:
        if self.source is None:
            self.source = open_source(self.settings, event_store_dsn(self.settings))
        start: tuple[Checkpoint, Head] | None = None
        if self.lake is not None and self.quiet + 1 < self.lake_every:
            head = self.source.head(self.landed)
            if head.last <= self.landed:
                # Nothing settled since the last cycle: no lake read at all (an idle follow costs one store query).
                self.quiet += 1
                return IngestResult(0, 0, self.landed, head, 0.0), []
            # The lake and the store were checked against each other by this connection's first ingest:
            # this one starts from the head just read (a checkpoint moved by another writer is found in the
            # batch's transaction).
            start = (self.landed, head)
        self.quiet = 0
        with self.lake_turns.cycle():  # the wide lane's housekeeping waits, or this does (pipelines.follow_lanes.Turns)
            return self._write(start)

    def _write(self, start: tuple[Checkpoint, Head] | None) -> tuple[IngestResult, list[ProjectResult]]:
        """The cycle's lake work: the ingest, then :meth:`_project`."""
        assert self.source is not None
        if self.lake is None:
            self.lake = open_lake(LakeConfig.from_settings(self.settings))
            ensure_event_catalog(self.lake)  # its DDL once; each ingest commit then carries the catalog's part
        if self.landed == START:
            self.landed = lake_checkpoint(self.lake)[0]  # once: later cycles know where the last one ended
        seen: set[tuple[str, int]] = set()

        def catalog(con: duckdb.DuckDBPyConnection, batch: LandedBatch) -> None:
            # In the batch's transaction: one commit, and its types come along.
            addition = add_new_events(con, batch=batch)
            if addition is not None:
                seen.update(addition.versions)

        self.ingests += 1
        # The batch is staged: the catalog, and the projections' read of the cycle's events, take it from memory.
        ingested = ingest(
            self.lake,
            self.source,
            batch_size=FOLLOW_BATCH,
            in_commit=catalog,
            stage=True,
            start=start,
            compact_after=None,  # the second lane's chore (below): a cycle never waits for that merge
            columns=self.columns,
        )
        if ingested.columns is not None:
            self.columns = ingested.columns
        try:
            done = self._project(ingested, seen)
        except BaseException:
            with contextlib.suppress(duckdb.Error):  # a broken connection: the error under way is the one to see
                drop_staged(self.lake, ingested.staged)
            raise
        drop_staged(self.lake, ingested.staged)
        return done

    def _project(self, ingested: IngestResult, seen: set[tuple[str, int]]) -> tuple[IngestResult, list[ProjectResult]]:
        """The cycle after its ingest: new types' views, the projections, the wide lane's kick, the feeds."""
        assert self.lake is not None
        # The views are listed only for a version not seen yet; one whose view failed to be written stays
        # pending (its catalog part is committed: the next cycle would not see it again).
        self.unviewed |= seen - self.typed
        new = untyped(self.lake, sorted(self.unviewed))
        if new:
            # A type or version never seen: analysts get its typed view now, not at the next `ingest`.
            views = refresh_analytics(
                self.lake,
                long_stream_threshold=self.long_stream_threshold,
                long_stream_days=self.settings.long_stream_days,
                declared=declared_types(),
                fields=field_policy(),
            )
            named = ", ".join(f"{t} v{v}" for t, v in new)
            self.log(f"{_clock()} new event types: {named}; analytics views written: {len(views)}")
        self.typed |= self.unviewed
        self.unviewed.clear()
        self.landed = ingested.checkpoint
        if self.lanes is None:
            wide = wide_names(self.registry)
            self.lanes = ([n for n in self.registry.names() if n not in wide], wide)
        if ingested.batches and self.ingests % self.lake_every == 1:
            # Each cycle writes a file. The cycle only appends to raw.events: the merge needs no turn.
            self._lane().chore(lambda con: compact_over(con, COMPACT_AFTER, largest=MERGE_BELOW), exclusive=False)
        results = project(
            self.lake,
            self.registry,
            names=self.lanes[0],
            cache=self.stream_keys,
            memory=self.streams,
            until=ingested.checkpoint,
            staged=ingested.staged,
        )
        if self.lanes[1]:
            self._lane().kick()
        # With no consumer, the lake is asked again every lake_every-th cycle, not every cycle (its read cost 5 ms
        # of each cycle under load): a consumer added meanwhile gets its first pass within that many cycles.
        error = ""
        if self.feeds or (self.ingests - 1) % self.lake_every == 0:
            try:  # a consumer's trouble (its target down, a leak) never stops ingest and project: a line per new error
                self.delivered = deliver(self.lake, self.registry)
                self.feeds = bool(self.delivered)
            except (ProjectionistError, psycopg.Error) as exc:
                self.delivered, error = [], f"{_clock()} delivery failed: {first_line(exc)}"
        else:
            self.delivered = []
        if error and error[9:] != self.delivery_error[9:]:
            self.warn(error)
        self.delivery_error = error
        self.written |= {f"{r.name}_v{r.version}" for r in results}
        if ingested.batches and self.ingests % self.lake_every == self.lake_every // 2:  # between compactions
            lane = self._lane()
            tables = [("meta", t) for t in TIDY_META] + [
                ("projections", t) for t in sorted(self.written | lane.advanced)
            ]
            schema, table = tables[self.turns % len(tables)]
            self.turns += 1
            lane.chore(lambda con: self._tidy(con, schema, table))
        return ingested, results

    def _lane(self) -> WideLane:
        """The second lane (its thread and lake connection): the wide versions, and the cycles' housekeeping."""
        if self.wide is None:
            assert self.lanes is not None
            config = LakeConfig.from_settings(self.settings)
            self.wide = WideLane(
                config, self.registry, self.lanes[1], self.log, self.warn, self.interval, turns=self.lake_turns
            )
        return self.wide

    def _tidy(self, con: duckdb.DuckDBPyConnection, schema: str, table: str) -> None:
        """Tidy one of the tables the cycles change, in the second lane: its reads stay as cheap as on day one.

        Without it, each cycle's reads of ``meta.checkpoints`` and ``meta.projection_versions`` would copy
        every row version the cycles before superseded, and a projection table would gather a file per
        cycle (:func:`warehouse.maintenance.tidy_table`). One table every ``lake_every`` ingests, in turn.
        A failure (a version dropped meanwhile, a conflict that outlasted its retries) is one line, and the
        next turn goes on.
        """
        try:
            tidy_table(
                con, schema, table, 0.0 if schema == "meta" else PROJECTION_DELETE_THRESHOLD, largest=MERGE_BELOW
            )
            error = ""
        except (duckdb.Error, ProjectionistError) as exc:
            if isinstance(exc, duckdb.InterruptException | duckdb.InternalException):
                raise  # the lane reports it and reconnects (an INTERNAL error may leave the connection unusable)
            error = f"{_clock()} tidying {schema}.{table} failed: {first_line(exc)}"
        finally:
            self.tidied += 1
        if error and error[9:] != self.tidy_error[9:]:
            self.warn(error)
        self.tidy_error = error

    def wait(self, seconds: float, stopped: Callable[[], bool] | None = None) -> bool:
        """Wait up to ``seconds`` for the next cycle; True when the store announced new events first.

        Listens on the store (its own session, opened on first use and again after a restart); a store
        without the trigger, or one that cannot be reached, makes this a plain sleep: polling.
        """
        if self.outage_since is not None:
            # In an outage the backoff rules: a notification would only repeat the failing cycle sooner.
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not (stopped is not None and stopped()):
                time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
            return False
        if self.listener is None:
            self.listener = Listener(lambda: event_store_dsn(self.settings), self.settings.notify_channel)
        return self.listener.wait(seconds, stopped)

    def _failed(self, error: ProjectionistError) -> float:
        # Connections that saw the failure may be broken in ways a retry on them would not cure
        # (a DuckDB instance after an internal error): start the next cycle on new ones. (The listener
        # mends its own session; closing it would make its next wait a fresh LISTEN, which returns at once.)
        self._drop()
        self.failures += 1
        if self.outage_since is None:
            self.outage_since = time.monotonic()
            self.warn(f"{_clock()} {error} (transient: retrying with backoff until it recovers)")
        return backoff(self.failures, self.interval)

    def _watch_holder(self, ingested: IngestResult) -> None:
        """Name the open transaction holding the safe head back, once it has held it ``holder_after`` s."""
        holder: Holder | None = None
        if ingested.head.events_pending and self.source is not None:
            holder = head_holder(self.source, ingested.head)
        if holder is None:
            if self.reported_holder is not None:
                self.log(f"{_clock()} the safe head moves again (the long transaction ended)")
            self.reported_holder = None
            self.holder_seen.clear()
            return
        key = (holder.pid, holder.transaction_id)
        first = self.holder_seen.setdefault(key, time.monotonic())
        self.holder_seen = {key: first}
        if key != self.reported_holder and time.monotonic() - first >= self.holder_after:
            self.reported_holder = key
            self.warn(f"{_clock()} {holder.describe(time.monotonic() - first)}")

    def close(self, drain: bool = True) -> None:
        """Drop the connections, the listener's too (errors while closing a broken one do not matter).

        The wide lane first finishes the pass the last cycle asked for, with ``drain`` (a stop after
        ``--max-cycles``), or stops where it is (a signal).
        """
        if self.wide is not None:
            self.wide.close(drain=drain)
            self.wide = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        self._drop()

    def _drop(self) -> None:
        """Drop the lake and store connections of the cycles."""
        if self.lake is not None:
            with contextlib.suppress(duckdb.Error):
                self.lake.close()
            self.lake = None
        if self.source is not None:
            with contextlib.suppress(duckdb.Error, psycopg.Error):
                close_source(self.source)
            self.source, self.columns = None, None
