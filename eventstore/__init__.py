"""Event stores Projectionist reads: connections, the native schema, the gap-safe reader, the demo shop."""

from eventstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    InvalidEventError,
    PoisonEventError,
    ProjectionDefinitionError,
    ProjectionistError,
    StoreUnavailableError,
    TerminalError,
    TransientError,
)
from eventstore.native import NewEvent, StreamAppend, append, append_streams, create_schema
from eventstore.reader import EVENT_SCHEMA, START, Checkpoint, Head, NativeReader, checkpoint_of
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
    "PoisonEventError",
    "ProjectionDefinitionError",
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
