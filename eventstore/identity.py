"""Which store a DSN reaches: the server's system identifier, the database, the schema and the table.

A lake holds the events of one store. Its checkpoint means nothing against another one (another
database on the same server, a staging copy, a different cluster): reading from there would skip
or duplicate events silently. The server's *system identifier* (from ``pg_control_system()``, set
when the cluster was created and shared by its streaming replicas) tells clusters apart; the
database and the table tell stores apart inside one.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventstore.connection import connect_read_only

__all__ = ["StoreIdentity", "read_identity"]


@dataclass(frozen=True)
class StoreIdentity:
    """Where a store's events live. ``system_identifier`` is None where the reading role may not read it."""

    kind: str
    system_identifier: str | None
    database: str
    schema: str
    table: str

    def __str__(self) -> str:
        system = f", system {self.system_identifier}" if self.system_identifier else ""
        return f"{self.kind}:{self.schema}.{self.table} in database {self.database!r}{system}"

    def matches(self, other: StoreIdentity) -> bool:
        """The same store; a system identifier unknown on either side is not held against it."""
        same_system = (
            self.system_identifier is None
            or other.system_identifier is None
            or self.system_identifier == other.system_identifier
        )
        return same_system and (self.kind, self.database, self.schema, self.table) == (
            other.kind,
            other.database,
            other.schema,
            other.table,
        )


def read_identity(dsn: str, kind: str, schema: str, table: str) -> StoreIdentity:
    """The identity of the store of ``kind`` whose events are in ``schema.table`` at ``dsn``."""
    import psycopg

    with connect_read_only(dsn) as conn:
        row = conn.execute("SELECT current_database()").fetchone()
        database = str(row[0]) if row else ""
        try:
            found = conn.execute("SELECT (pg_control_system()).system_identifier::text").fetchone()
            system = str(found[0]) if found and found[0] is not None else None
        except psycopg.errors.InsufficientPrivilege:  # revoked from PUBLIC on some managed servers
            system = None
    return StoreIdentity(kind, system, database, schema, table)
