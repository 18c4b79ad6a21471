"""Errors raised by Projectionist.

Every error says whether retrying can help, so a Dagster retry policy or a CLI exit code
can act on it::

    ProjectionistError                 base class; ``retryable`` tells transient from terminal
     ├── TransientError                retrying later can succeed
     │    └── StoreUnavailableError    PostgreSQL (event store or catalog) cannot be reached
     └── TerminalError                 retrying the same call fails the same way
          ├── ConfigurationError       a setting (DSN, identifier, path, store kind) is wrong
          ├── ConcurrencyError         an append's expected stream version is not the current one
          ├── InvalidEventError        an event to append is malformed (payload not a JSON object, ...)
          └── UndecodableEventError    an event read from a store cannot be decoded (compressed, encrypted, binary)

Each layer defines the errors it raises in this tree: ``projections.errors`` (definitions, poison
events), ``warehouse.errors`` (the lake, promotions, comparisons).
"""

from __future__ import annotations

__all__ = [
    "ConcurrencyError",
    "ConfigurationError",
    "InvalidEventError",
    "ProjectionistError",
    "StoreUnavailableError",
    "TerminalError",
    "TransientError",
    "UndecodableEventError",
]


class ProjectionistError(Exception):
    """Base of every error Projectionist raises on purpose."""

    retryable: bool = False
    exit_code: int = 1


class TransientError(ProjectionistError):
    """Raised when the same call may succeed later (a server down, a lock held)."""

    retryable = True
    exit_code = 75  # EX_TEMPFAIL


class TerminalError(ProjectionistError):
    """Raised when retrying the same call cannot help: the input or the setting must change."""

    exit_code = 2


class StoreUnavailableError(TransientError):
    """Raised when a PostgreSQL server cannot be reached or refuses the connection."""


class ConfigurationError(TerminalError):
    """Raised when a setting (DSN, identifier, path, store kind) is invalid."""


class ConcurrencyError(TerminalError):
    """Raised when an append's expected stream version is not the stream's current version."""

    def __init__(self, stream_id: str, expected: int | None, actual: int | None) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        where = f"is at version {actual}" if actual is not None else "was appended to concurrently"
        super().__init__(
            f"stream {stream_id!r} {where}, not at the expected version {expected}: another writer "
            "appended first; reload the stream and decide again. Nothing was written."
        )


class InvalidEventError(TerminalError):
    """Raised when an event to append is malformed; nothing of its batch is written."""


class UndecodableEventError(TerminalError):
    """Raised when an event read from a store cannot be decoded (compressed, encrypted or binary payload)."""
