"""Projections: versioned read models computed over any DuckDB relation shaped like raw.events.

A projection is one Python module declaring ``PROJECTION = Projection(...)`` with a body of one of
three kinds (:class:`Sql`, :class:`Polars`, :class:`Fold`); :func:`discover` finds the bundled ones
(``projections/shop/``) and those in the folder named by ``PROJECTIONIST_PROJECTIONS``.
:func:`compute` gives a projection's rows (all, or those of some keys), :func:`compute_into` appends
them to a table (the rebuild's path), :func:`touched_keys` the keys a checkpoint range affects,
:func:`upcast_events` the events read at their latest versions.
This package imports ``eventstore`` types only. See docs/projections.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from projections.fields import FieldPolicy, PublicFields
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
    "FieldPolicy",
    "Fold",
    "InsertResult",
    "PoisonEvent",
    "PoisonPolicy",
    "Polars",
    "Projection",
    "PublicFields",
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

#: Where each re-exported name lives: imported on first use, so importing one submodule of the package
#: (``projections.errors``, say) does not load them all (and their DuckDB, polars, pyarrow).
_EXPORTS = {
    "LAST_GLOBAL_POSITION": "projections.definition",
    "TENANT_ID": "projections.definition",
    "Column": "projections.definition",
    "Event": "projections.definition",
    "ExpectedChange": "projections.definition",
    "Fold": "projections.definition",
    "PoisonPolicy": "projections.definition",
    "Polars": "projections.definition",
    "Projection": "projections.definition",
    "Sql": "projections.definition",
    "CHECKS": "projections.engine",
    "DATA_ERRORS": "projections.engine",
    "ComputeResult": "projections.engine",
    "InsertResult": "projections.engine",
    "PoisonEvent": "projections.engine",
    "compute": "projections.engine",
    "compute_into": "projections.engine",
    "find_poison": "projections.engine",
    "touched_keys": "projections.engine",
    "FieldPolicy": "projections.fields",
    "PublicFields": "projections.fields",
    "Registry": "projections.registry",
    "discover": "projections.registry",
    "EVENT_COLUMNS": "projections.upcasting",
    "Upcaster": "projections.upcasting",
    "Upcasters": "projections.upcasting",
    "upcast_events": "projections.upcasting",
}


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
