"""Delivery of change feeds, at least once and in order per key: a PostgreSQL outbox, HTTP webhooks, Parquet drops.

One pass per consumer reads the changes of its projection from its cursor's snapshot to the lake's
newest (:func:`warehouse.feeds.changes.changes`: one change per key, so a key's changes keep their
order across passes), delivers them in batches and then moves the cursor:

- **outbox**: rows appended to ``projectionist.outbox`` in the target database in the same transaction
  as the cursor's advance in ``projectionist.consumer_cursors`` there (the authority; locked ``FOR
  UPDATE`` for the pass, so two passes cannot both deliver). A crash anywhere delivers nothing twice.
- **webhook**: each batch POSTed as JSON with ``X-Projectionist-Signature: sha256=<HMAC-SHA256 of the
  body>`` (the secret from the consumer's ``secret_env`` variable), retried with exponential backoff up
  to the consumer's attempts, each with its timeout, at most ``rate_per_second`` requests; a batch that
  fails every attempt goes to ``meta.feed_dead_letters`` with its body. The cursor moves after the last
  batch: a crash resends the pass, with the same idempotency keys.
- **parquet**: one file per batch under ``<target>/<consumer>/``, then a manifest (JSON) naming them,
  written last; readers take only files a manifest lists.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from eventstore.connection import redact
from eventstore.duckdb_connections import load_extension
from eventstore.failures import first_line
from eventstore.positions import START
from eventstore.quoting import quote_literal
from projections import Registry
from warehouse.feeds.changes import Change, ChangeSet, FeedError, changes, current_snapshot, live_at
from warehouse.feeds.consumers import Consumer, get_consumer, list_consumers, resolve_dsn, set_cursor
from warehouse.feeds.public import publish
from warehouse.object_storage import EXTENSIONS, S3Location

__all__ = [
    "OUTBOX_DDL",
    "DeliveryResult",
    "deliver",
    "ensure_outbox",
    "message",
    "reset_consumer",
    "sign",
]

OUTBOX_DDL = (
    "CREATE SCHEMA IF NOT EXISTS projectionist",
    "CREATE TABLE IF NOT EXISTS projectionist.outbox (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    "consumer text NOT NULL, idempotency_key text NOT NULL, projection text NOT NULL, version int, op text NOT NULL, "
    "key jsonb NOT NULL, row jsonb, content_hash text, previous_hash text, from_snapshot bigint, to_snapshot bigint, "
    "transaction_id bigint, global_position bigint, last_global_position bigint, "
    "created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS projectionist.consumer_cursors (consumer text PRIMARY KEY, source text NOT NULL, "
    "snapshot bigint NOT NULL DEFAULT 0, version int, transaction_id bigint, global_position bigint, "
    "updated_at timestamptz NOT NULL DEFAULT now())",
)
_OUTBOX_COLUMNS = (
    "consumer, idempotency_key, projection, version, op, key, row, content_hash, previous_hash, from_snapshot, "
    "to_snapshot, transaction_id, global_position, last_global_position"
)
SIGNATURE_HEADER = "X-Projectionist-Signature"


@dataclass
class DeliveryResult:
    """What one pass delivered to one consumer."""

    consumer: str
    kind: str
    source: str
    from_snapshot: int
    to_snapshot: int
    counts: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    dead_letters: int = 0
    requests: int = 0  # webhook requests, retries included
    dry_run: bool = False

    @property
    def changes(self) -> int:
        """Changes delivered (or, in a dry run, waiting)."""
        return sum(self.counts.values())

    def describe(self) -> str:
        """One line: what the pass delivered (or, dry, would deliver)."""
        counts = ", ".join(f"{n:,} {op}s" for op, n in self.counts.items() if n) or "no changes"
        span = f"snapshots {self.from_snapshot}..{self.to_snapshot}"
        who = f"{self.consumer} ({self.kind} of {self.source})"
        if self.dry_run:
            return f"dry run: {who} would receive {counts} ({span}); nothing was sent"
        dead = f"; {self.dead_letters} batch(es) dead-lettered" if self.dead_letters else ""
        return f"{who}: {counts} in {self.batches} batch(es), {span}{dead}"


def _idle(consumer: Consumer, changeset: ChangeSet) -> bool:
    """Nothing to send and nothing switched: the cursor need not move (no lake commit per idle pass).

    It still moves once an hour, so that it never rests on a snapshot lake maintenance expires.
    """
    recent = consumer.updated_at is not None and (datetime.now(UTC) - consumer.updated_at).total_seconds() < 3600
    return recent and not changeset.changes and not changeset.whole and changeset.to_version == consumer.version


def sign(secret: str, body: bytes) -> str:
    """The value of ``X-Projectionist-Signature`` for ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def message(consumer: str, changeset: ChangeSet, change: Change) -> str:
    """One change as the JSON object every delivery kind sends (its key and row inlined as DuckDB wrote them)."""
    source = json.dumps(
        {
            "from_snapshot": changeset.from_snapshot,
            "to_snapshot": changeset.to_snapshot,
            "checkpoint": str(changeset.checkpoint),
            "last_global_position": change.last_global_position,
        }
    )
    head = json.dumps(
        {
            "idempotency_key": change.idempotency_key,
            "consumer": consumer,
            "projection": changeset.projection,
            "version": changeset.to_version,
            "op": change.op,
            "content_hash": change.content_hash,
            "previous_hash": change.previous_hash,
        }
    )
    return f'{head[:-1]}, "key": {change.key}, "row": {change.row or "null"}, "source": {source}}}'


def ensure_outbox(dsn: str, consumer: str, source: str) -> int:
    """Create the outbox and cursor tables in the target database if missing, and the consumer's cursor row.

    Returns the snapshot of that cursor: 0 for a new one; a consumer of the same name that this target
    already knows keeps its cursor (the target is its authority: its outbox holds what was delivered).
    """
    try:
        with psycopg.connect(dsn, connect_timeout=10) as pg:
            for ddl in OUTBOX_DDL:
                pg.execute(ddl)
            pg.execute(
                "INSERT INTO projectionist.consumer_cursors (consumer, source) VALUES (%s, %s) "
                "ON CONFLICT (consumer) DO NOTHING",
                [consumer, source],
            )
            row = pg.execute(
                "SELECT snapshot FROM projectionist.consumer_cursors WHERE consumer = %s", [consumer]
            ).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error as exc:
        raise FeedError(
            f"outbox target {redact(dsn)} cannot be used: {first_line(exc)}. Give a DSN of a database this role may "
            "connect to and create a schema in."
        ) from exc


def _batches(items: list[Change], size: int) -> list[list[Change]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _outbox(
    con: duckdb.DuckDBPyConnection, registry: Registry, consumer: Consumer, to: int, dry_run: bool
) -> DeliveryResult:
    dsn = resolve_dsn(consumer.target)
    with psycopg.connect(dsn, connect_timeout=10) as pg:
        row = pg.execute(
            "SELECT snapshot FROM projectionist.consumer_cursors WHERE consumer = %s FOR UPDATE", [consumer.name]
        ).fetchone()
        if row is None:
            raise FeedError(
                f"the outbox target of {consumer.name} has no cursor row for it: remove and add the consumer again"
            )
        start = int(row[0])
        changeset = changes(con, registry, consumer.source, start, to, consumer=consumer.name)
        counts = changeset.counts()
        result = DeliveryResult(consumer.name, "outbox", consumer.source, start, to, counts, dry_run=dry_run)
        if dry_run or (start == consumer.snapshot and _idle(consumer, changeset)):
            pg.rollback()
            return result
        cp = changeset.checkpoint
        with pg.cursor() as cur, cur.copy(f"COPY projectionist.outbox ({_OUTBOX_COLUMNS}) FROM STDIN") as copy:
            for change in changeset.changes:
                copy.write_row(
                    (
                        consumer.name,
                        change.idempotency_key,
                        consumer.source,
                        changeset.to_version,
                        change.op,
                        change.key,
                        change.row,
                        change.content_hash,
                        change.previous_hash,
                        start,
                        to,
                        cp.transaction_id,
                        cp.global_position,
                        change.last_global_position,
                    )
                )
        pg.execute(
            "UPDATE projectionist.consumer_cursors SET snapshot = %s, version = %s, transaction_id = %s, "
            "global_position = %s, updated_at = now() WHERE consumer = %s",
            [to, changeset.to_version, cp.transaction_id, cp.global_position, consumer.name],
        )
        pg.commit()
        result.batches = 1 if changeset.changes else 0
    # The lake's copy follows the target's cursor (the authority); a crash before this line only leaves it behind.
    set_cursor(con, consumer.name, to, changeset.to_version, cp, len(changeset.changes))
    return result


class _Pacer:
    """At most ``rate`` calls per second."""

    def __init__(self, rate: float | None) -> None:
        self.gap = 1.0 / rate if rate else 0.0
        self.last = 0.0

    def wait(self) -> None:
        if self.gap:
            delay = self.last + self.gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.last = time.monotonic()


def _post(url: str, body: bytes, signature: str, batch_key: str, timeout: float) -> None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature, "Idempotency-Key": batch_key},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # the scheme is checked at `feed add`
        response.read()


def _webhook(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    consumer: Consumer,
    to: int,
    dry_run: bool,
    retry_delay: float,
    sent: Callable[[int], None] | None,
) -> DeliveryResult:
    changeset = changes(con, registry, consumer.source, consumer.snapshot, to, consumer=consumer.name)
    result = DeliveryResult(
        consumer.name, "webhook", consumer.source, consumer.snapshot, to, changeset.counts(), dry_run=dry_run
    )
    if dry_run or _idle(consumer, changeset):
        return result
    secret = os.environ.get(consumer.secret_env or "")
    if not secret:
        raise FeedError(
            f"the environment variable {consumer.secret_env} (signing secret of webhook consumer {consumer.name}) "
            "is not set: set it, then deliver again. Nothing was sent."
        )
    pacer = _Pacer(consumer.rate_per_second)
    dead: list[tuple[Any, ...]] = []
    for batch in _batches(changeset.changes, consumer.batch_size):
        batch_key = hashlib.sha256("".join(c.idempotency_key for c in batch).encode()).hexdigest()[:32]
        head = json.dumps(
            {
                "consumer": consumer.name,
                "projection": consumer.source,
                "batch_key": batch_key,
                "from_snapshot": changeset.from_snapshot,
                "to_snapshot": to,
                "checkpoint": str(changeset.checkpoint),
            }
        )
        changes_json = ", ".join(message(consumer.name, changeset, c) for c in batch)
        body = f'{head[:-1]}, "changes": [{changes_json}]}}'.encode()
        signature = sign(secret, body)
        error = ""
        for attempt in range(1, consumer.attempts + 1):
            pacer.wait()
            result.requests += 1
            try:
                _post(consumer.target, body, signature, batch_key, consumer.timeout_seconds)
                error = ""
                break
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code} {exc.reason}"
            except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
                error = first_line(exc)
            if attempt < consumer.attempts:
                time.sleep(min(30.0, retry_delay * 2 ** (attempt - 1)))
        result.batches += 1
        if error:
            dead.append(
                (
                    consumer.name,
                    consumer.source,
                    batch_key,
                    changeset.from_snapshot,
                    to,
                    len(batch),
                    consumer.attempts,
                    error,
                    body.decode(),
                )
            )
        elif sent is not None:
            sent(len(batch))
    result.dead_letters = len(dead)
    set_cursor(
        con,
        consumer.name,
        to,
        changeset.to_version,
        changeset.checkpoint,
        len(changeset.changes),
        expected=consumer.snapshot,
        dead=dead,
    )
    return result


class _Drop:
    """Where a Parquet consumer's files go: ``<target>/<consumer>/`` in a local folder (each file written
    aside, then renamed into place) or under an object-storage prefix ``s3://bucket/prefix`` (each object
    appears whole when its upload completes; written through the lake connection's httpfs, with a secret
    for that bucket from the standard AWS credential chain)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, consumer: Consumer) -> None:
        self.con = con
        self.s3 = consumer.target.startswith("s3://")
        if self.s3:
            prefix = consumer.target.rstrip("/") + "/"
            location = S3Location.parse(prefix, os.environ)
            for extension in EXTENSIONS:
                load_extension(con, extension)
            digest = hashlib.sha256(location.bucket.encode()).hexdigest()[:12]
            con.execute(location.secret_sql(name=f"projectionist_feed_{digest}"))
            self.url = f"{prefix}{consumer.name}/"
        else:
            self.folder = Path(consumer.target) / consumer.name
            self.folder.mkdir(parents=True, exist_ok=True)

    def parquet(self, name: str, table: pa.Table) -> None:
        if self.s3:
            self.con.register("_feed_drop", table)
            try:
                self.con.execute(f"COPY _feed_drop TO {quote_literal(self.url + name)} (FORMAT parquet)")
            finally:
                self.con.unregister("_feed_drop")
            return
        partial = self.folder / f".{name}.partial"
        pq.write_table(table, partial)
        partial.replace(self.folder / name)

    def manifest(self, name: str, manifest: dict[str, Any]) -> None:
        text = json.dumps(manifest)  # one line: JSON escapes every control character, the delimiter below too
        if self.s3:
            self.con.execute(
                f"COPY (SELECT ?::VARCHAR) TO {quote_literal(self.url + name)} "
                "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x1f')",
                [text],
            )
            return
        partial = self.folder / f".{name}.partial"
        partial.write_text(json.dumps(manifest, indent=2) + "\n")
        partial.replace(self.folder / name)


def _parquet(
    con: duckdb.DuckDBPyConnection, registry: Registry, consumer: Consumer, to: int, dry_run: bool
) -> DeliveryResult:
    changeset = changes(con, registry, consumer.source, consumer.snapshot, to, consumer=consumer.name)
    result = DeliveryResult(
        consumer.name, "parquet", consumer.source, consumer.snapshot, to, changeset.counts(), dry_run=dry_run
    )
    if dry_run or _idle(consumer, changeset):
        return result
    drop = _Drop(con, consumer)
    cp = changeset.checkpoint
    files = []
    for index, batch in enumerate(_batches(changeset.changes, consumer.batch_size)):
        table = pa.table(
            {
                "idempotency_key": [c.idempotency_key for c in batch],
                "op": [c.op for c in batch],
                "key": [c.key for c in batch],
                "row": [c.row for c in batch],
                "content_hash": [c.content_hash for c in batch],
                "previous_hash": [c.previous_hash for c in batch],
                "last_global_position": pa.array([c.last_global_position for c in batch], pa.int64()),
                "version": pa.array([changeset.to_version] * len(batch), pa.int32()),
                "from_snapshot": pa.array([changeset.from_snapshot] * len(batch), pa.int64()),
                "to_snapshot": pa.array([to] * len(batch), pa.int64()),
            }
        )
        name = f"{to:012d}-{index:05d}.parquet"
        drop.parquet(name, table)
        files.append({"file": name, "changes": len(batch)})
        result.batches += 1
    manifest = {
        "consumer": consumer.name,
        "projection": consumer.source,
        "version": changeset.to_version,
        "from_snapshot": changeset.from_snapshot,
        "to_snapshot": to,
        "checkpoint": str(cp),
        "changes": len(changeset.changes),
        "files": files,
    }
    drop.manifest(f"{to:012d}.manifest.json", manifest)
    set_cursor(con, consumer.name, to, changeset.to_version, cp, len(changeset.changes), expected=consumer.snapshot)
    return result


def deliver(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str | None = None,
    *,
    dry_run: bool = False,
    retry_delay: float = 0.5,
    sent: Callable[[int], None] | None = None,
) -> list[DeliveryResult]:
    """One delivery pass to consumer ``name`` (or to every consumer, by name), up to the lake's newest snapshot.

    ``dry_run`` computes what each would receive and sends nothing. ``sent`` is called with the number
    of changes of each webhook batch the receiver accepted.
    """
    consumers = [get_consumer(con, name)] if name else list_consumers(con)
    if not consumers:
        return []
    publish(con, registry)  # a public event version built since: its view, and the leak check, come first
    to = current_snapshot(con)
    results = []
    for consumer in consumers:
        if consumer.kind == "outbox":
            results.append(_outbox(con, registry, consumer, to, dry_run))
        elif consumer.kind == "webhook":
            results.append(_webhook(con, registry, consumer, to, dry_run, retry_delay, sent))
        else:
            results.append(_parquet(con, registry, consumer, to, dry_run))
    return results


def reset_consumer(con: duckdb.DuckDBPyConnection, name: str, snapshot: int) -> Consumer:
    """Move consumer ``name``'s cursor back to ``snapshot`` (0: the beginning), here and in an outbox's target."""
    consumer = get_consumer(con, name)
    live = live_at(con, consumer.source, snapshot) if snapshot else None
    version, checkpoint = live if live else (None, START)
    if consumer.kind == "outbox":
        with psycopg.connect(resolve_dsn(consumer.target), connect_timeout=10) as pg:
            pg.execute(
                "UPDATE projectionist.consumer_cursors SET snapshot = %s, version = %s, transaction_id = %s, "
                "global_position = %s, updated_at = now() WHERE consumer = %s",
                [snapshot, version, checkpoint.transaction_id, checkpoint.global_position, name],
            )
    set_cursor(con, name, snapshot, version, checkpoint)
    return get_consumer(con, name)
