"""Readers of the event stores people already run: native, Marten, Emmett, ``eventsourcing``.

Every adapter honours one contract (:class:`EventStoreAdapter`): ``head(after)`` returns the
safe head, ``read(after, batch_size=..., until=...)`` yields Arrow batches of
:data:`ADAPTER_SCHEMA` (the lake's ``raw.events`` columns, ``EVENT_SCHEMA``, plus
``is_archived`` and ``tenant_id``) in checkpoint order up to that head, and
``duckdb_relation_sql(after, bound, limit)`` is the same read as DuckDB SQL over the store
attached as ``store``, so the ingest can run it inside DuckDB without Python touching a row.
Each adapter names its gap-safety strategy in ``gap_safety`` and argues it in its module
docstring:

=================  ========================  ==============================================
kind               ``gap_safety``            checkpoint
=================  ========================  ==============================================
native             transaction-snapshot      ``(transaction_id, global_position)``
emmett             transaction-snapshot      ``(transaction_id, global_position)``
marten             sequence-high-water-mark  ``(0, seq_id)``
eventsourcing      table-lock                ``(0, notification_id)``
=================  ========================  ==============================================

Stores without a transaction id put 0 in ``transaction_id`` on every row, so ``(0, position)``
orders exactly as the store does. Undecodable events (compressed, encrypted, binary) come
through as *bad rows* — ``data`` null, ``metadata.decode_error`` saying what was found — see
:func:`bad_rows`.

Configuration: ``PROJECTIONIST_EVENT_STORE_KIND`` picks the adapter,
``PROJECTIONIST_EVENT_STORE_SCHEMA`` the schema holding the tables (all kinds), and
``PROJECTIONIST_EVENT_STORE_TABLE`` the table for ``native`` (default ``events``) and
``eventsourcing`` (``<app>_events``; found automatically when the schema holds exactly one).
"""

from __future__ import annotations

from eventstore.adapters._base import ADAPTER_SCHEMA, BadRow, EventStoreAdapter, bad_rows, raise_for_bad_rows
from eventstore.adapters.detect import FoundStore, detect_stores
from eventstore.adapters.emmett import EmmettAdapter
from eventstore.adapters.eventsourcing import EventsourcingAdapter
from eventstore.adapters.marten import MartenAdapter
from eventstore.adapters.native import NativeAdapter, with_adapter_columns
from eventstore.errors import ConfigurationError
from eventstore.settings import Settings

__all__ = [
    "ADAPTER_SCHEMA",
    "BadRow",
    "EmmettAdapter",
    "EventStoreAdapter",
    "EventsourcingAdapter",
    "FoundStore",
    "MartenAdapter",
    "NativeAdapter",
    "bad_rows",
    "detect_stores",
    "open_reader",
    "raise_for_bad_rows",
    "with_adapter_columns",
]

#: The native table's default name: for ``eventsourcing`` it means "not set" (no app is named "").
_DEFAULT_TABLE = "events"


def open_reader(settings: Settings, dsn: str) -> EventStoreAdapter:
    """The adapter for ``settings.store_kind`` reading the store at ``dsn``; checks its tables first."""
    kind = settings.store_kind
    if kind == "native":
        _check_native(settings, dsn)
        return NativeAdapter(dsn, settings.store_schema, settings.store_table)
    if kind == "emmett":
        return EmmettAdapter(dsn, settings.store_schema)
    if kind == "marten":
        return MartenAdapter(dsn, settings.store_schema)
    if kind == "eventsourcing":
        table = None if settings.store_table == _DEFAULT_TABLE else settings.store_table
        return EventsourcingAdapter(dsn, settings.store_schema, table)
    raise ConfigurationError(
        f"PROJECTIONIST_EVENT_STORE_KIND {kind!r} is unknown: use native, marten, emmett or eventsourcing."
    )


def _check_native(settings: Settings, dsn: str) -> None:
    from eventstore.adapters.detect import describe_found
    from eventstore.connection import describe_dsn

    found = detect_stores(dsn, settings.store_schema)
    if any(s.kind == "native" and s.table == settings.store_table for s in found):
        return
    raise ConfigurationError(
        f"PROJECTIONIST_EVENT_STORE_KIND=native expects the native event table "
        f"{settings.store_schema}.{settings.store_table} (global_position, transaction_id xid8, stream_version, ...) "
        f"in {describe_dsn(dsn)}, and it is not there. {describe_found(dsn)} "
        "For a new native store run `projectionist init`."
    )
