"""A proven high-water mark for event tables whose positions come from a sequence.

Used by the adapters whose tables carry no transaction id (Marten always, ``eventsourcing``
when a writer bypasses its table lock). The argument is written out in ``marten.py``; in
short, a position ``H`` is *proven* when every position ``<= H`` is committed and visible or
can never exist, by (1) contiguity of visible positions above a proven one, (2) nobody holding
a write lock after the sequence's high value was read, (3) remembered ``(high value, writers)``
candidates whose writers have all ended since. No timer ever skips a hole.
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["WRITE_LOCK_MODES", "SequenceHighWater"]

#: Lock modes that writing takes (INSERT/UPDATE/DELETE, nextval, LOCK TABLE ... EXCLUSIVE).
WRITE_LOCK_MODES = ("RowExclusiveLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
_MAX_CANDIDATES = 64

_WRITERS = """
SELECT DISTINCT l.virtualtransaction FROM pg_locks l
WHERE l.locktype = 'relation' AND l.granted AND l.mode = ANY(%s)
  AND l.pid IS DISTINCT FROM pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation IN (SELECT %s::regclass UNION ALL SELECT relid FROM pg_partition_tree(%s::regclass))
"""


class SequenceHighWater:
    """Proves safe positions of ``table.position`` fed by ``sequence``; keeps candidates between calls."""

    def __init__(self, table_sql: str, position: str, sequence_sql: str) -> None:
        self.table_sql = table_sql
        self.position = position
        self.sequence_sql = sequence_sql
        self.proven = 0
        self._candidates: list[tuple[int, frozenset[str]]] = []

    def writers(self, conn: psycopg.Connection[Any]) -> frozenset[str]:
        """Virtual transaction ids holding a write lock on the sequence or the table (or its partitions)."""
        rows = conn.execute(_WRITERS, (list(WRITE_LOCK_MODES), self.sequence_sql, self.table_sql)).fetchall()
        rows += conn.execute(_WRITERS, (list(WRITE_LOCK_MODES), self.table_sql, self.table_sql)).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def prove(self, conn: psycopg.Connection[Any], after: int) -> tuple[int, bool]:
        """The highest proven position (at least ``after``, trusted as settled) and whether writers are in flight."""
        self.proven = max(self.proven, after)
        # (2) first the highest value handed out, then — a later statement — who may hold one.
        row = conn.execute(
            f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {self.sequence_sql}"
        ).fetchone()
        assert row is not None
        allocated = int(row[0])
        writers = self.writers(conn)
        proven = self.proven
        remaining: list[tuple[int, frozenset[str]]] = []
        for position, holders in self._candidates:
            if holders.isdisjoint(writers):  # (3) every one of them has ended since
                proven = max(proven, position)
            else:
                remaining.append((position, holders))
        if not writers:
            proven = max(proven, allocated)
            remaining = []
        elif allocated > proven:
            remaining.append((allocated, writers))
        # (1) visible positions without a hole above the proven one are settled for good.
        col = self.position
        contiguous = conn.execute(
            f"SELECT max({col}) FROM (SELECT {col}, row_number() OVER (ORDER BY {col}) AS n "
            f"FROM {self.table_sql} WHERE {col} > %s) AS t WHERE {col} = %s + n",
            (proven, proven),
        ).fetchone()
        if contiguous and contiguous[0] is not None:
            proven = max(proven, int(contiguous[0]))
        self.proven = proven
        self._candidates = remaining[-_MAX_CANDIDATES:]
        return proven, bool(writers)
