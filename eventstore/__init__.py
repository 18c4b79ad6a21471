"""Event stores Projectionist reads: connections, the native schema, the gap-safe reader, the demo shop."""

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
