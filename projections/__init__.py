"""Projections: versioned read models computed over any DuckDB relation shaped like raw.events.

A projection is one Python module declaring ``PROJECTION = Projection(...)`` with a body of one of
three kinds (:class:`Sql`, :class:`Polars`, :class:`Fold`); :func:`discover` finds the bundled ones
(``projections/shop/``) and those in the folder named by ``PROJECTIONIST_PROJECTIONS``.
:func:`compute` gives a projection's rows (all, or those of some keys), :func:`compute_into` appends
them to a table (the rebuild's path), :func:`touched_keys` the keys a checkpoint range affects,
:func:`upcast_events` the events read at their latest versions.
This package imports ``eventstore`` types only. See docs/projections.md.
"""

from projections.definition import (
    LAST_GLOBAL_POSITION,
    TENANT_ID,
    Column,
    Event,
    ExpectedChange,
    Fold,
    PoisonPolicy,
    Polars,
    Projection,
    Sql,
)
from projections.engine import (
    CHECKS,
    DATA_ERRORS,
    ComputeResult,
    InsertResult,
    PoisonEvent,
    compute,
    compute_into,
    find_poison,
    touched_keys,
)
from projections.registry import Registry, discover
from projections.upcasting import EVENT_COLUMNS, Upcaster, Upcasters, upcast_events

__all__ = [
    "CHECKS",
    "DATA_ERRORS",
    "EVENT_COLUMNS",
    "LAST_GLOBAL_POSITION",
    "TENANT_ID",
    "Column",
    "ComputeResult",
    "Event",
    "ExpectedChange",
    "Fold",
    "InsertResult",
    "PoisonEvent",
    "PoisonPolicy",
    "Polars",
    "Projection",
    "Registry",
    "Sql",
    "Upcaster",
    "Upcasters",
    "compute",
    "compute_into",
    "discover",
    "find_poison",
    "touched_keys",
    "upcast_events",
]
