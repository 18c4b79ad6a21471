"""The ``public`` schema of the lake: each built version of a public event as ``public.<name>_v<N>``.

A public event (:class:`projections.public_events.PublicEvent`) is built, compared, promoted and delivered
as a projection; :func:`publish` shows each of its built versions as a view ``public.<name>_v<N>`` over
its table (the columns the live view would show), then checks the data with
:func:`warehouse.privacy.private_leaks` over the ``public`` schema. A version whose view holds a private
field's value is not published (its view is dropped again) and the error names the leak, so its
change feed is not delivered either (:func:`warehouse.feeds.deliver` publishes first).
"""

from __future__ import annotations

import duckdb

from eventstore.quoting import quote_literal
from projections import Registry
from projections.public_events import PUBLIC_SCHEMA, PublicEvent
from warehouse.feeds.changes import FeedError
from warehouse.lake import retry_conflicts, transaction
from warehouse.privacy import private_leaks
from warehouse.versions.catalog import list_versions, live_columns, version_table

__all__ = ["public_events", "publish", "unpublished"]


def public_events(registry: Registry) -> list[str]:
    """Names of the registry's public events."""
    return sorted({p.name for p in registry if isinstance(p, PublicEvent)})


def _views(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = 'lake' AND schema_name = ?", [PUBLIC_SCHEMA]
    ).fetchall()
    return {str(r[0]) for r in rows}


def unpublished(con: duckdb.DuckDBPyConnection, registry: Registry) -> list[tuple[str, int]]:
    """Built versions of public events that have no ``public`` view yet."""
    names = public_events(registry)
    if not names:
        return []
    views = _views(con)
    return [
        (v.name, v.version)
        for name in names
        for v in list_versions(con, name)
        if v.state in ("ready", "live", "retired") and f"{name}_v{v.version}" not in views
    ]


def publish(con: duckdb.DuckDBPyConnection, registry: Registry) -> list[str]:
    """Write ``public.<name>_v<N>`` for every built public event version missing one; check it; return the views.

    Raises :class:`FeedError` naming each leak (a private field's value in a public view); the views of
    this call are then dropped again.
    """
    missing = unpublished(con, registry)
    if not missing:
        return []
    written = [f"{PUBLIC_SCHEMA}.{name}_v{version}" for name, version in missing]

    def commit() -> None:
        with transaction(con):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {PUBLIC_SCHEMA}")
            for (name, version), view in zip(missing, written, strict=True):
                table = version_table(name, version)
                columns = ", ".join(f'"{c}"' for c, _ in live_columns(con, table))
                con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT {columns} FROM {table}")
                comment = f"Public event {name} v{version} (contract; rows from {table})."
                con.execute(f"COMMENT ON VIEW {view} IS {quote_literal(comment)}")

    retry_conflicts(commit, "publishing public events")
    leaks = [leak for leak in private_leaks(con, registry, schemas=(PUBLIC_SCHEMA,)) if leak.relation in written]
    if leaks:

        def drop() -> None:
            with transaction(con):
                for view in written:
                    con.execute(f"DROP VIEW IF EXISTS {view}")

        retry_conflicts(drop, "withdrawing leaking public events")
        raise FeedError(
            "public events not published, they carry private fields: "
            + "; ".join(str(leak) for leak in leaks)
            + ". Take the field out of the public event's body (or declare it public in PUBLIC_FIELDS), rebuild it."
        )
    return written
