"""Time travel by store position: which lake snapshot answers "as the store stood at position P".

Every ingest commit carries the store checkpoint it reached in its DuckLake commit's extra info
(:func:`commit_info`, read back from ``ducklake_snapshots('lake').commit_extra_info``). The lake as of
P is the last snapshot before the first ingest commit that went past P: by then the lake held every
event up to P and nothing after it, and the projections had been brought up to date with those
events as far as they were. Commits between ingests (projections, promotions) carry no checkpoint:
they stand at the one of the ingest before them.

Snapshots expire (``projectionist maintain``): a position or time whose snapshot is gone, or that
lies before the first tagged commit, is refused with :class:`TimeTravelError`, never answered from
another snapshot.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.positions import Checkpoint

__all__ = [
    "TimeTravelError",
    "commit_info",
    "parse_position",
    "parse_time",
    "snapshot_at_position",
    "snapshot_at_time",
]


class TimeTravelError(ConfigurationError):
    """A position or time the lake cannot answer for: before its first tagged commit, expired, or not reached yet."""


def commit_info(checkpoint: Checkpoint) -> str:
    """The extra info of an ingest commit: the store checkpoint it reached, as JSON."""
    return json.dumps(
        {"checkpoint": {"transaction_id": checkpoint.transaction_id, "global_position": checkpoint.global_position}}
    )


_POSITION = re.compile(r"^\s*(?:(\d+)\s*/\s*)?(\d+)\s*$")


def parse_position(text: str) -> tuple[int | None, int]:
    """``T/N`` (a checkpoint as ``status`` prints it) → ``(T, N)``; ``N`` → ``(None, N)``."""
    match = _POSITION.match(text)
    if not match:
        raise TimeTravelError(
            f"--as-of-position {text!r} is not a store position: give a checkpoint as `projectionist status` prints "
            "it (TRANSACTION_ID/GLOBAL_POSITION, e.g. 1918/20004), or a global position (e.g. 20004)."
        )
    return (int(match.group(1)) if match.group(1) else None, int(match.group(2)))


def _tagged(con: duckdb.DuckDBPyConnection) -> list[tuple[int, Checkpoint]]:
    """(snapshot id, checkpoint) of every kept ingest commit, oldest first.

    When maintenance expired the ingest commit the oldest kept snapshot stands on, that snapshot counts
    too, with the checkpoint it holds (``meta.checkpoints`` as of it): positions from there on stay answerable.
    """
    tagged = _ingest_commits(con)
    oldest = con.execute("SELECT min(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()
    if oldest is None or oldest[0] is None or (tagged and tagged[0][0] == int(oldest[0])):
        return tagged
    try:
        row = con.execute(
            f"SELECT transaction_id, global_position FROM meta.checkpoints AT (VERSION => {int(oldest[0])}) "
            "WHERE consumer = 'ingest'"
        ).fetchone()
    except duckdb.CatalogException:  # the lake's first snapshot, before its tables
        return tagged
    if row is None or (not row[0] and not row[1]) or (tagged and Checkpoint(int(row[0]), int(row[1])) >= tagged[0][1]):
        return tagged
    return [(int(oldest[0]), Checkpoint(int(row[0]), int(row[1]))), *tagged]


def _ingest_commits(con: duckdb.DuckDBPyConnection) -> list[tuple[int, Checkpoint]]:
    rows = con.execute(
        "SELECT snapshot_id, commit_extra_info FROM ducklake_snapshots('lake') "
        "WHERE commit_extra_info LIKE '%\"checkpoint\"%' ORDER BY snapshot_id"
    ).fetchall()
    tagged = []
    for snapshot, info in rows:
        try:
            point = json.loads(str(info))["checkpoint"]
            tagged.append((int(snapshot), Checkpoint(int(point["transaction_id"]), int(point["global_position"]))))
        except (ValueError, KeyError, TypeError):
            continue  # another tool's extra info
    return tagged


def snapshot_at_position(con: duckdb.DuckDBPyConnection, position: str) -> tuple[int, Checkpoint]:
    """The snapshot of the lake as it stood when the store was at ``position``, and the checkpoint it holds."""
    transaction_id, global_position = parse_position(position)
    tagged = _tagged(con)
    if not tagged:
        raise TimeTravelError(
            "the lake has no commit tagged with a store checkpoint yet: run `projectionist ingest` (commits are "
            "tagged since issue 16; earlier ones cannot be found by position, use --as-of TIMESTAMP)."
        )
    if transaction_id is None:
        if any(c.transaction_id for _, c in tagged):
            raise TimeTravelError(
                f"--as-of-position {position}: this store's checkpoints are TRANSACTION_ID/GLOBAL_POSITION (its events "
                f"are ordered by transaction); give one as `projectionist status` prints it, e.g. {tagged[-1][1]}."
            )
        transaction_id = 0
    wanted = Checkpoint(transaction_id, global_position)
    first_snapshot, first = tagged[0]
    if wanted < first:
        raise TimeTravelError(
            f"position {wanted} is before the oldest tagged commit the lake keeps (snapshot {first_snapshot}, "
            f"checkpoint {first}): older snapshots were expired (`projectionist maintain`, "
            "PROJECTIONIST_TIME_TRAVEL_WINDOW) or predate tagging."
        )
    past = next((snapshot for snapshot, checkpoint in tagged if checkpoint > wanted), None)
    if past is None:
        last = tagged[-1][1]
        if wanted > last:
            raise TimeTravelError(
                f"position {wanted} is beyond the lake's checkpoint {last}: the lake has not reached it yet "
                "(run `projectionist ingest`)."
            )
        row = con.execute("SELECT max(snapshot_id) FROM ducklake_snapshots('lake')").fetchone()
        assert row is not None
        return int(row[0]), last
    row = con.execute(
        "SELECT max(snapshot_id) FROM ducklake_snapshots('lake') WHERE snapshot_id < ?", [past]
    ).fetchone()
    assert row is not None and row[0] is not None  # the first tagged snapshot is at or below `wanted`
    holds = max(checkpoint for snapshot, checkpoint in tagged if snapshot <= int(row[0]))
    return int(row[0]), holds


def parse_time(text: str) -> datetime:
    """An ISO 8601 timestamp (UTC when it names no zone); TimeTravelError naming the form otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise TimeTravelError(
            f"--as-of {text!r} is not a timestamp: use ISO 8601, e.g. 2026-12-07T09:30:00Z or '2026-12-07 09:30' (UTC)."
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def snapshot_at_time(con: duckdb.DuckDBPyConnection, moment: datetime) -> int:
    """The snapshot that was current at ``moment``; refused before the oldest snapshot the lake keeps."""
    row = con.execute(
        "SELECT max(snapshot_id) FILTER (WHERE snapshot_time <= ?), min(snapshot_time) FROM ducklake_snapshots('lake')",
        [moment],
    ).fetchone()
    assert row is not None
    if row[0] is None:
        raise TimeTravelError(
            f"--as-of {moment.isoformat()} is before the oldest snapshot the lake keeps ({row[1]}): older ones were "
            "expired (`projectionist maintain`, PROJECTIONIST_TIME_TRAVEL_WINDOW) or the lake did not exist yet."
        )
    return int(row[0])
