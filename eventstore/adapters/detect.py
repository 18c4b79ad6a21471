"""Which event stores a database holds: so a wrong ``PROJECTIONIST_EVENT_STORE_KIND`` says what is there."""

from __future__ import annotations

from dataclasses import dataclass

from eventstore.connection import connect_read_only

__all__ = ["FoundStore", "describe_found", "detect_stores"]


@dataclass(frozen=True)
class FoundStore:
    """An event table found in a database: its kind, schema and table."""

    kind: str
    schema: str
    table: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table} ({self.kind})"


# One query over the catalog: tables whose columns give their kind away.
_DETECT = """
SELECT n.nspname, c.relname,
       bool_or(a.attname = 'transaction_id' AND a.atttypid = 'xid8'::regtype) AS has_xid8,
       bool_or(a.attname = 'global_position') AS has_global_position,
       bool_or(a.attname = 'stream_version') AS has_stream_version,
       bool_or(a.attname = 'message_kind') AS has_message_kind,
       bool_or(a.attname = 'seq_id') AS has_seq_id,
       bool_or(a.attname = 'mt_dotnet_type') AS has_dotnet_type,
       bool_or(a.attname = 'notification_id') AS has_notification_id,
       bool_or(a.attname = 'originator_id') AS has_originator_id,
       bool_or(a.attname = 'state' AND a.atttypid = 'bytea'::regtype) AS has_state
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
  AND (%s::text IS NULL OR n.nspname = %s::text)
GROUP BY n.nspname, c.relname
ORDER BY n.nspname, c.relname
"""


def detect_stores(dsn: str, schema: str | None = None) -> list[FoundStore]:
    """Event tables of the four known kinds in the database (optionally one schema)."""
    found: list[FoundStore] = []
    with connect_read_only(dsn) as conn:
        for row in conn.execute(_DETECT, (schema, schema)).fetchall():
            nsp, table, xid8, global_position, stream_version, kind_col, seq_id, dotnet, notification, orig, state = row
            if table == "emt_messages" and xid8 and kind_col:
                found.append(FoundStore("emmett", nsp, table))
            elif table == "emt_events":
                found.append(FoundStore("emmett (before 0.38: emt_events)", nsp, table))
            elif table == "mt_events" and seq_id and dotnet:
                found.append(FoundStore("marten", nsp, table))
            elif notification and orig and state:
                found.append(FoundStore("eventsourcing", nsp, table))
            elif xid8 and global_position and stream_version:
                found.append(FoundStore("native", nsp, table))
    return found


def describe_found(dsn: str, schema: str | None = None) -> str:
    """One sentence naming the event tables that do exist (for error messages)."""
    stores = detect_stores(dsn)
    if not stores:
        return "No event table of a known kind (native, marten, emmett, eventsourcing) exists in that database."
    listed = "; ".join(str(s) for s in stores)
    return (
        f"Event tables found in that database: {listed}: set PROJECTIONIST_EVENT_STORE_KIND, "
        "PROJECTIONIST_EVENT_STORE_SCHEMA and PROJECTIONIST_EVENT_STORE_TABLE to match one of them."
    )
