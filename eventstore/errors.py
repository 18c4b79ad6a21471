"""Errors raised by Projectionist.

Every error says whether retrying can help, so a Dagster retry policy or a CLI exit code
can act on it::

    ProjectionistError                 base class; ``retryable`` tells transient from terminal
     ├── TransientError                retrying later can succeed
     │    └── StoreUnavailableError    PostgreSQL (event store or catalog) cannot be reached
     └── TerminalError                 retrying the same call fails the same way
          ├── ConfigurationError       a setting (DSN, identifier, path, store kind) is wrong
          ├── ConcurrencyError         an append's expected stream version is not the current one
          ├── ComparisonError          two relations cannot be compared as asked (unknown relation,
          │    │                       key column missing on a side, bad predicate)
          │    └── DuplicateKeyError   a relation holds several rows for one key
          ├── InvalidEventError        an event to append is malformed (payload not a JSON object, ...)
          ├── UndecodableEventError    an event read from a store cannot be decoded (compressed, encrypted, binary)
          ├── ProjectionDefinitionError  a projection or upcaster module is wrong (syntax, duplicate, bad name)
          └── PoisonEventError         a stored event cannot be projected and the policy is ``stop``
"""

from __future__ import annotations

__all__ = [
    "ComparisonError",
    "ConcurrencyError",
    "ConfigurationError",
    "DuplicateKeyError",
    "InvalidEventError",
    "PoisonEventError",
    "ProjectionDefinitionError",
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


class ComparisonError(TerminalError):
    """Raised when two relations cannot be compared as asked (unknown relation, missing key, bad predicate)."""


class DuplicateKeyError(ComparisonError):
    """Raised when a compared relation holds several rows for one key and the policy is to refuse."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        # The key report of the offending side(s) (a warehouse.diff.KeyReport), for callers that render it.
        self.report = report


class UndecodableEventError(TerminalError):
    """Raised when an event read from a store cannot be decoded (compressed, encrypted or binary payload)."""


class ProjectionDefinitionError(TerminalError):
    """Raised when a projection or upcaster module is invalid: syntax error, duplicate, bad name or schema."""


class PoisonEventError(TerminalError):
    """Raised when a projection with the ``stop`` poison policy meets an event it cannot process."""

    def __init__(self, projection: str, event_id: str, global_position: int, reason: str, others: int = 0) -> None:
        self.projection = projection
        self.event_id = event_id
        self.global_position = global_position
        self.reason = reason
        more = f" ({others} more poison events after it)" if others else ""
        super().__init__(
            f"projection {projection} cannot process event {event_id} at global position {global_position}: "
            f"{reason}{more}. Fix the event with an upcaster, or compute with the 'skip' policy to dead-letter it."
        )
