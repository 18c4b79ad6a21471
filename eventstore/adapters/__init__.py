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

**The registry.** :data:`ADAPTERS` below is the only list of store kinds: settings validation, the
CLI's choices, detection (which event tables a database holds) and ``open_reader`` all derive
from it. A kind is one module holding its adapter class: its reader (``head``/``read``/``query``),
``recognize`` (detection), ``from_settings``, ``table`` (the source name), ``gap_safety`` and the
argument for it in the module docstring. Adding a store = that module, one line here, one
contract-suite subclass (``tests/eventstore/contract.py``) and a writer for its tests
(``docs/architecture.md`` walks through Emmett's).

Configuration: ``PROJECTIONIST_EVENT_STORE_KIND`` picks the adapter,
``PROJECTIONIST_EVENT_STORE_SCHEMA`` the schema holding the tables (all kinds), and
``PROJECTIONIST_EVENT_STORE_TABLE`` the table for ``native`` (default ``events``) and
``eventsourcing`` (``<app>_events``; found automatically when the schema holds exactly one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventstore.adapters._base import (
    ArchiveNotSupportedError,
    BadRow,
    CatalogTable,
    EventStoreAdapter,
    SqlAdapter,
    StoreArchive,
    StoreMismatchError,
    StreamFingerprint,
    adapter_schema,
    bad_rows,
    catalog_tables,
    raise_for_bad_rows,
)
from eventstore.adapters.emmett import EmmettAdapter
from eventstore.adapters.eventsourcing import EventsourcingAdapter
from eventstore.adapters.marten import MartenAdapter
from eventstore.adapters.native import NativeAdapter, with_adapter_columns
from eventstore.errors import ConfigurationError
from eventstore.settings import Settings

__all__ = [
    "ADAPTERS",
    "ADAPTER_SCHEMA",
    "ArchiveNotSupportedError",
    "BadRow",
    "EmmettAdapter",
    "EventStoreAdapter",
    "EventsourcingAdapter",
    "FoundStore",
    "MartenAdapter",
    "NativeAdapter",
    "StoreArchive",
    "StreamFingerprint",
    "adapter_class",
    "bad_rows",
    "check_tenant_field",
    "describe_found",
    "detect_stores",
    "open_reader",
    "raise_for_bad_rows",
    "store_kinds",
    "with_adapter_columns",
]

#: Every store kind Projectionist reads, by ``PROJECTIONIST_EVENT_STORE_KIND`` (the one list of kinds).
ADAPTERS: dict[str, type[NativeAdapter] | type[SqlAdapter]] = {
    adapter.kind: adapter for adapter in (NativeAdapter, MartenAdapter, EmmettAdapter, EventsourcingAdapter)
}


def __getattr__(name: str) -> Any:
    """``ADAPTER_SCHEMA``, built on first use (it loads pyarrow, which an ingest in DuckDB does not need)."""
    if name != "ADAPTER_SCHEMA":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return adapter_schema()


def store_kinds() -> tuple[str, ...]:
    """The kinds ``PROJECTIONIST_EVENT_STORE_KIND`` accepts, in the registry's order."""
    return tuple(ADAPTERS)


def adapter_class(kind: str) -> type[NativeAdapter] | type[SqlAdapter]:
    """The adapter class of ``kind``; an unknown kind is a ConfigurationError listing the known ones."""
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ConfigurationError(
            f"PROJECTIONIST_EVENT_STORE_KIND {kind!r} is unknown: use one of {', '.join(ADAPTERS)}."
        ) from None


def open_reader(settings: Settings, dsn: str) -> EventStoreAdapter:
    """The adapter for ``settings.store_kind`` reading the store at ``dsn``; checks its tables first.

    When the tables are not what the kind expects, the error also names the event tables the database
    does hold, so a wrong kind or schema says what to set instead.
    """
    cls = adapter_class(settings.store_kind)
    check_tenant_field(settings)
    try:
        return cls.from_settings(settings, dsn)
    except StoreMismatchError as exc:
        raise StoreMismatchError(f"{exc} {describe_found(dsn)}") from exc


def check_tenant_field(settings: Settings) -> None:
    """Refuse a ``PROJECTIONIST_TENANT_FIELD`` the configured kind cannot honour (a ConfigurationError saying why)."""
    field, cls = settings.tenant_field, adapter_class(settings.store_kind)
    if field is None:
        return
    if cls.own_tenant is not None:
        raise ConfigurationError(
            f"PROJECTIONIST_TENANT_FIELD={field} is for stores without tenants of their own: a {cls.kind} store "
            f"keeps its tenant in {cls.own_tenant}, which lands in raw.events.tenant_id as it is. "
            "Unset PROJECTIONIST_TENANT_FIELD."
        )
    if field.place == "column" and not cls.tenant_columns:
        raise ConfigurationError(
            f"PROJECTIONIST_TENANT_FIELD={field} names a column, but a {cls.kind} events table has fixed columns: "
            f"name a field of the event instead (data.{field.name} or metadata.{field.name})."
        )


@dataclass(frozen=True)
class FoundStore:
    """An event table found in a database: its kind, schema and table."""

    kind: str
    schema: str
    table: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table} ({self.kind})"


def _recognized(table: CatalogTable) -> str | None:
    for adapter in ADAPTERS.values():
        kind = adapter.recognize(table)
        if kind is not None:
            return kind
    return None


def detect_stores(dsn: str, schema: str | None = None) -> list[FoundStore]:
    """The event tables of every registered kind in the database (optionally one schema), by their columns."""
    found = []
    for table in catalog_tables(dsn, schema):
        kind = _recognized(table)
        if kind is not None:
            found.append(FoundStore(kind, table.schema, table.name))
    return found


def describe_found(dsn: str, schema: str | None = None) -> str:
    """One sentence naming the event tables that do exist (for error messages)."""
    stores = detect_stores(dsn, schema)
    if not stores:
        return f"No event table of a known kind ({', '.join(ADAPTERS)}) exists in that database."
    listed = "; ".join(str(s) for s in stores)
    return (
        f"Event tables found in that database: {listed}: set PROJECTIONIST_EVENT_STORE_KIND, "
        "PROJECTIONIST_EVENT_STORE_SCHEMA and PROJECTIONIST_EVENT_STORE_TABLE to match one of them."
    )
