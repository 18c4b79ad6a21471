"""Event stores Projectionist reads: connections, the native schema, the gap-safe reader, the demo shop."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventstore.adapters.native import NativeReader
    from eventstore.errors import (
        ConcurrencyError,
        ConfigurationError,
        InvalidEventError,
        ProjectionistError,
        StoreUnavailableError,
        TerminalError,
        TransientError,
    )
    from eventstore.native_store import NewEvent, StreamAppend, append, append_streams, create_schema
    from eventstore.positions import EVENT_SCHEMA, START, Checkpoint, Head, checkpoint_of
    from eventstore.settings import Settings

__all__ = [
    "EVENT_SCHEMA",
    "START",
    "Checkpoint",
    "ConcurrencyError",
    "ConfigurationError",
    "Head",
    "InvalidEventError",
    "NativeReader",
    "NewEvent",
    "ProjectionistError",
    "Settings",
    "StoreUnavailableError",
    "StreamAppend",
    "TerminalError",
    "TransientError",
    "append",
    "append_streams",
    "checkpoint_of",
    "create_schema",
]

#: Where each re-exported name lives: imported on first use, so importing one submodule of the package
#: (``eventstore.errors``, say) does not load them all (and their DuckDB, polars, pyarrow).
_EXPORTS = {
    "NativeReader": "eventstore.adapters.native",
    "ConcurrencyError": "eventstore.errors",
    "ConfigurationError": "eventstore.errors",
    "InvalidEventError": "eventstore.errors",
    "ProjectionistError": "eventstore.errors",
    "StoreUnavailableError": "eventstore.errors",
    "TerminalError": "eventstore.errors",
    "TransientError": "eventstore.errors",
    "NewEvent": "eventstore.native_store",
    "StreamAppend": "eventstore.native_store",
    "append": "eventstore.native_store",
    "append_streams": "eventstore.native_store",
    "create_schema": "eventstore.native_store",
    "EVENT_SCHEMA": "eventstore.positions",
    "START": "eventstore.positions",
    "Checkpoint": "eventstore.positions",
    "Head": "eventstore.positions",
    "checkpoint_of": "eventstore.positions",
    "Settings": "eventstore.settings",
}


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
