"""``projectionist follow`` as a service: ingest and project in a loop that outlives outages.

Each cycle ingests what settled in the store and brings every projection version up to the lake's
checkpoint. A transient failure (the store or the lake's catalog restarting, a connection lost, a
busy catalog: :mod:`eventstore.failures`) drops the connections, logs one line for the outage and
waits with jittered exponential backoff; the first cycle that succeeds again logs one line with how
long it lasted. Nothing is lost or read twice meanwhile: every commit carries its checkpoint, so a
cycle cut short leaves the lake before or after a commit, never between. A terminal failure (a wrong
password, a missing table, a poison event under policy ``stop``) ends the loop, as does a signal.

A writer transaction that stays open holds the safe head back (its events, and every later one,
wait until it ends): when it has held it for longer than ``holder_after`` seconds, one line names it.
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
from eventstore.positions import START, Checkpoint, Holder
from eventstore.settings import Settings
from projections import Registry
from projections.registry import declared_types, field_policy
from warehouse.analytics import DEFAULT_LONG_STREAM_THRESHOLD, refresh_analytics, untyped_versions
from warehouse.event_catalog import refresh_event_catalog
from warehouse.feeds import DeliveryResult, deliver
from warehouse.ingest import EventSource, IngestResult, ingest, lake_checkpoint
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import close_source, head_holder, open_source
from warehouse.versions import ProjectResult, project

__all__ = ["Follower", "backoff"]


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

    def cycle(self) -> float:
        """One cycle; returns the seconds to wait before the next. Raises on a terminal failure."""
        started = time.monotonic()
        try:
            ingested, results = self._work()
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
        self._watch_holder(ingested)
        return self.interval

    def _work(self) -> tuple[IngestResult, list[ProjectResult]]:
        if self.source is None:
            self.source = open_source(self.settings, event_store_dsn(self.settings))
        if self.lake is None:
            self.lake = open_lake(LakeConfig.from_settings(self.settings))
        if self.landed == START:
            self.landed = lake_checkpoint(self.lake)[0]  # once: later cycles know where the last one ended
        ingested = ingest(self.lake, self.source)
        if ingested.events:
            refresh_event_catalog(self.lake)
            new = untyped_versions(self.lake, self.landed)
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
        self.landed = ingested.checkpoint
        results = project(self.lake, self.registry)
        try:  # a consumer's trouble (its target down, a leak) never stops ingest and project: one line per new error
            self.delivered, error = deliver(self.lake, self.registry), ""
        except (ProjectionistError, psycopg.Error) as exc:
            self.delivered, error = [], f"{_clock()} delivery failed: {first_line(exc)}"
        if error and error[9:] != self.delivery_error[9:]:
            self.warn(error)
        self.delivery_error = error
        return ingested, results

    def _failed(self, error: ProjectionistError) -> float:
        # Connections that saw the failure may be broken in ways a retry on them would not cure
        # (a DuckDB instance after an internal error): start the next cycle on new ones.
        self.close()
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

    def close(self) -> None:
        """Drop the connections (errors while closing a broken one do not matter)."""
        if self.lake is not None:
            with contextlib.suppress(duckdb.Error):
                self.lake.close()
            self.lake = None
        if self.source is not None:
            with contextlib.suppress(duckdb.Error, psycopg.Error):
                close_source(self.source)
            self.source = None
