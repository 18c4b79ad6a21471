"""Errors of the projections layer, placed in the tree of ``eventstore.errors``::

TerminalError
 ├── ProjectionDefinitionError  a projection or upcaster module is wrong (syntax, duplicate, bad name, schema)
 └── PoisonEventError           a stored event cannot be projected and the policy is ``stop``
"""

from __future__ import annotations

from eventstore.errors import TerminalError

__all__ = ["PoisonEventError", "ProjectionDefinitionError"]


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
