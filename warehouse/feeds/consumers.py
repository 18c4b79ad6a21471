"""Feed consumers and their durable cursors: ``meta.feed_consumers``, one row per consumer, and its dead letters.

A consumer receives the changes of one projection (its ``source``) through one kind of delivery
(``outbox``, ``webhook`` or ``parquet``) to its ``target`` (a PostgreSQL DSN or ``env:VAR`` naming one, a
URL, a folder or an ``s3://bucket/prefix``). Its cursor is the lake snapshot it has received up to, with the
checkpoint and live version that snapshot held. For an outbox the authority is the copy of the cursor kept in the target
database (advanced in the same transaction as the outbox rows); the row here follows it.

Consumers are added and removed with ``projectionist feed add/remove`` rather than declared in files:
their cursors live in the lake anyway, and a command can check the target (connect, create the outbox)
at the moment the consumer is declared instead of at the first delivery.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import duckdb

from eventstore.connection import redact
from eventstore.positions import START, Checkpoint
from eventstore.quoting import quote_literal
from projections import Registry
from projections.registry import did_you_mean
from warehouse.feeds.changes import FeedError
from warehouse.lake import retry_conflicts, transaction
from warehouse.versions.catalog import exists

__all__ = [
    "KINDS",
    "Consumer",
    "DeadLetter",
    "add_consumer",
    "check_consumer",
    "dead_letters",
    "display_target",
    "ensure_feed_tables",
    "get_consumer",
    "list_consumers",
    "remove_consumer",
    "resolve_dsn",
    "set_cursor",
]

KINDS = ("outbox", "webhook", "parquet")

_CONSUMERS_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.feed_consumers (name VARCHAR, kind VARCHAR, source VARCHAR, target VARCHAR, "
    "secret_env VARCHAR, batch_size INTEGER, attempts INTEGER, timeout_seconds DOUBLE, rate_per_second DOUBLE, "
    "snapshot BIGINT, version INTEGER, transaction_id BIGINT, global_position BIGINT, delivered BIGINT, "
    "created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)"
)
_DEAD_LETTERS_DDL = (
    "CREATE TABLE IF NOT EXISTS meta.feed_dead_letters (consumer VARCHAR, source VARCHAR, batch_key VARCHAR, "
    "from_snapshot BIGINT, to_snapshot BIGINT, changes INTEGER, attempts INTEGER, error VARCHAR, body VARCHAR, "
    "dead_lettered_at TIMESTAMPTZ)"
)
_COMMENTS = {
    "meta.feed_consumers": "One row per feed consumer: what it receives, where, and the lake snapshot it has up to.",
    "meta.feed_dead_letters": "Webhook batches given up after the consumer's attempts: their body, the last error.",
}
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_COLUMNS = (
    "name, kind, source, target, secret_env, batch_size, attempts, timeout_seconds, rate_per_second, snapshot, "
    "version, transaction_id, global_position, delivered, created_at, updated_at"
)


@dataclass(frozen=True)
class Consumer:
    """One consumer of a projection's change feed and its cursor."""

    name: str
    kind: str
    source: str
    target: str
    secret_env: str | None = None
    batch_size: int = 500
    attempts: int = 5
    timeout_seconds: float = 10.0
    rate_per_second: float | None = None
    snapshot: int = 0  # the lake snapshot received up to (0: nothing yet)
    version: int | None = None
    checkpoint: Checkpoint = START
    delivered: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The consumer as JSON (the target's password redacted; the secret's variable name only)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "target": display_target(self),
            "secret_env": self.secret_env,
            "batch_size": self.batch_size,
            "attempts": self.attempts,
            "timeout_seconds": self.timeout_seconds,
            "rate_per_second": self.rate_per_second,
            "snapshot": self.snapshot,
            "version": self.version,
            "checkpoint": str(self.checkpoint),
            "delivered": self.delivered,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


@dataclass(frozen=True)
class DeadLetter:
    """A webhook batch given up after its attempts."""

    consumer: str
    batch_key: str
    from_snapshot: int
    to_snapshot: int
    changes: int
    attempts: int
    error: str
    dead_lettered_at: datetime


def display_target(consumer: Consumer) -> str:
    """The target as it may be printed: a DSN's password replaced by ``***``."""
    if consumer.kind != "outbox" or consumer.target.startswith("env:"):
        return consumer.target
    return redact(consumer.target)


def resolve_dsn(target: str) -> str:
    """An outbox target's DSN: the target itself, or the value of the variable an ``env:VAR`` target names."""
    if not target.startswith("env:"):
        return target
    variable = target.removeprefix("env:")
    value = os.environ.get(variable)
    if not value:
        raise FeedError(f"outbox target {target}: the environment variable {variable} is not set; set it to the DSN")
    return value


def ensure_feed_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create ``meta.feed_consumers`` and ``meta.feed_dead_letters`` if missing (one commit)."""
    found = con.execute(
        "SELECT 'meta.' || table_name FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'meta'"
    ).fetchall()
    if {str(r[0]) for r in found} >= set(_COMMENTS):
        return

    def create() -> None:
        with transaction(con):
            con.execute(_CONSUMERS_DDL)
            con.execute(_DEAD_LETTERS_DDL)
            for table, comment in _COMMENTS.items():
                con.execute(f"COMMENT ON TABLE {table} IS {quote_literal(comment)}")

    retry_conflicts(create, "creating the feed tables")


def _has_tables(con: duckdb.DuckDBPyConnection) -> bool:
    return exists(con, "meta", "feed_consumers")  # a bind, not a listing of every lake table


def _consumer(row: tuple[Any, ...]) -> Consumer:
    return Consumer(
        name=str(row[0]),
        kind=str(row[1]),
        source=str(row[2]),
        target=str(row[3]),
        secret_env=row[4],
        batch_size=int(row[5]),
        attempts=int(row[6]),
        timeout_seconds=float(row[7]),
        rate_per_second=None if row[8] is None else float(row[8]),
        snapshot=int(row[9] or 0),
        version=None if row[10] is None else int(row[10]),
        checkpoint=Checkpoint(int(row[11] or 0), int(row[12] or 0)),
        delivered=int(row[13] or 0),
        created_at=row[14],
        updated_at=row[15],
    )


def list_consumers(con: duckdb.DuckDBPyConnection) -> list[Consumer]:
    """Every consumer, by name (none before the first ``feed add``)."""
    if not _has_tables(con):
        return []
    rows = con.execute(f"SELECT {_COLUMNS} FROM meta.feed_consumers ORDER BY name").fetchall()
    return [_consumer(r) for r in rows]


def get_consumer(con: duckdb.DuckDBPyConnection, name: str) -> Consumer:
    """The consumer ``name``; a :class:`FeedError` naming the known ones otherwise."""
    consumers = list_consumers(con)
    for consumer in consumers:
        if consumer.name == name:
            return consumer
    known = [c.name for c in consumers]
    raise FeedError(
        f"unknown feed consumer {name!r}{did_you_mean(name, known)}: known ones are {known} "
        "(`projectionist feed add` declares one)."
    )


def check_consumer(consumer: Consumer, registry: Registry) -> None:
    """Raise a :class:`FeedError` naming what is wrong with ``consumer`` (before anything is written)."""
    if not _NAME.match(consumer.name):
        raise FeedError(
            f"consumer name {consumer.name!r} is not valid: use lower-case letters, digits, '_' and '-', "
            "starting with a letter (at most 63)."
        )
    if consumer.kind not in KINDS:
        raise FeedError(f"unknown consumer kind {consumer.kind!r}: use one of {list(KINDS)}.")
    if consumer.source not in registry.names():
        raise FeedError(
            f"unknown projection {consumer.source!r}{did_you_mean(consumer.source, registry.names())}: "
            f"known ones are {registry.names()}."
        )
    if consumer.batch_size < 1 or consumer.attempts < 1 or consumer.timeout_seconds <= 0:
        raise FeedError("--batch-size and --attempts must be at least 1, and --timeout above 0.")
    if consumer.rate_per_second is not None and consumer.rate_per_second <= 0:
        raise FeedError("--rate must be above 0 requests per second (leave it out for no limit).")
    if consumer.kind == "parquet" and consumer.target.startswith("s3://"):
        _check_s3_target(consumer.target)
    if consumer.kind == "webhook":
        parts = urlsplit(consumer.target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FeedError(f"webhook target {consumer.target!r} is not an http(s) URL: give e.g. https://host/path.")
        if not consumer.secret_env:
            raise FeedError(
                "a webhook consumer needs --secret-env VAR: the variable holding the HMAC-SHA256 signing secret."
            )
        if not os.environ.get(consumer.secret_env):
            raise FeedError(
                f"the environment variable {consumer.secret_env} (the webhook's signing secret) is not set: set it, "
                "then add the consumer again."
            )


def _check_s3_target(target: str) -> None:
    from warehouse.errors import LakeConfigurationError
    from warehouse.object_storage import S3Location

    try:
        S3Location.parse(target.rstrip("/") + "/", os.environ)
    except LakeConfigurationError as exc:
        raise FeedError(f"parquet target {target!r}: {exc}") from exc


def add_consumer(con: duckdb.DuckDBPyConnection, consumer: Consumer) -> None:
    """Record a new consumer (its cursor at the beginning); refuses a name already taken."""
    ensure_feed_tables(con)

    def commit() -> None:
        with transaction(con):
            taken = con.execute("SELECT count(*) FROM meta.feed_consumers WHERE name = ?", [consumer.name]).fetchone()
            if taken and taken[0]:
                raise FeedError(
                    f"feed consumer {consumer.name!r} already exists: remove it first (`projectionist feed remove "
                    f"{consumer.name} --yes`) or choose another name."
                )
            con.execute(
                f"INSERT INTO meta.feed_consumers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, 0, 0, 0, "
                "get_current_timestamp(), get_current_timestamp())",
                [
                    consumer.name,
                    consumer.kind,
                    consumer.source,
                    consumer.target,
                    consumer.secret_env,
                    consumer.batch_size,
                    consumer.attempts,
                    consumer.timeout_seconds,
                    consumer.rate_per_second,
                ],
            )

    retry_conflicts(commit, f"adding feed consumer {consumer.name}")


def remove_consumer(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Forget a consumer, its cursor and its dead letters (an outbox's rows in its target stay)."""
    get_consumer(con, name)

    def commit() -> None:
        with transaction(con):
            con.execute("DELETE FROM meta.feed_consumers WHERE name = ?", [name])
            con.execute("DELETE FROM meta.feed_dead_letters WHERE consumer = ?", [name])

    retry_conflicts(commit, f"removing feed consumer {name}")


def set_cursor(
    con: duckdb.DuckDBPyConnection,
    name: str,
    snapshot: int,
    version: int | None,
    checkpoint: Checkpoint,
    delivered: int = 0,
    *,
    expected: int | None = None,
    dead: list[tuple[Any, ...]] | None = None,
) -> bool:
    """Move a consumer's cursor (and record ``dead`` letters) in one commit.

    With ``expected``, only when the cursor is still at that snapshot: False when another delivery
    moved it meanwhile (then nothing is written).
    """
    moved = True

    def commit() -> None:
        nonlocal moved
        with transaction(con) as tx:
            if expected is not None:
                row = con.execute("SELECT snapshot FROM meta.feed_consumers WHERE name = ?", [name]).fetchone()
                if row is None or int(row[0] or 0) != expected:
                    moved = False
                    tx.abandon()
                    return
            con.execute(
                "UPDATE meta.feed_consumers SET snapshot = ?, version = ?, transaction_id = ?, global_position = ?, "
                "delivered = delivered + ?, updated_at = get_current_timestamp() WHERE name = ?",
                [snapshot, version, checkpoint.transaction_id, checkpoint.global_position, delivered, name],
            )
            if dead:
                con.executemany(
                    "INSERT INTO meta.feed_dead_letters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, get_current_timestamp())",
                    dead,
                )

    retry_conflicts(commit, f"moving the cursor of feed consumer {name}")
    return moved


def dead_letters(con: duckdb.DuckDBPyConnection, name: str | None = None) -> list[DeadLetter]:
    """The dead letters of ``name`` (or of every consumer), newest first."""
    if not _has_tables(con):
        return []
    where, params = ("WHERE consumer = ?", [name]) if name else ("", [])
    rows = con.execute(
        "SELECT consumer, batch_key, from_snapshot, to_snapshot, changes, attempts, error, dead_lettered_at "
        f"FROM meta.feed_dead_letters {where} ORDER BY dead_lettered_at DESC",
        params,
    ).fetchall()
    return [DeadLetter(str(r[0]), str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), str(r[6]), r[7]) for r in rows]
