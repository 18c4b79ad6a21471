"""Errors of the warehouse (the DuckLake lake), placed in the tree of ``eventstore.errors``::

TransientError
 └── LakeUnavailableError     the catalog cannot be reached, or a commit kept losing conflicts
TerminalError
 ├── LakeConfigurationError   the catalog or data path is unusable as configured (corrupt, unwritable)
 │    └── LakeNotCreatedError  a read-only open of a lake nothing was ever ingested into
 ├── PromotionError           a promotion or rollback that cannot be done as asked (not ready, no diff)
 ├── FingerprintMismatchError a projection's code changed without a version bump
 └── ComparisonError          two relations cannot be compared as asked (unknown relation, key column
      │                       missing on a side, bad predicate)
      └── DuplicateKeyError   a relation holds several rows for one key (in warehouse.diff.model,
                              beside the key report it carries)
"""

from __future__ import annotations

from eventstore.errors import ConfigurationError, TerminalError, TransientError
from projections.errors import ProjectionDefinitionError

__all__ = [
    "ComparisonError",
    "FingerprintMismatchError",
    "LakeConfigurationError",
    "LakeNotCreatedError",
    "LakeUnavailableError",
    "PromotionError",
]


class LakeUnavailableError(TransientError):
    """Raised when the lake's catalog cannot be reached or a commit lost every retry of a catalog conflict."""


class LakeConfigurationError(ConfigurationError):
    """Raised when the lake's catalog or data path cannot work as configured (corrupt, unwritable, wrong kind)."""


class LakeNotCreatedError(LakeConfigurationError):
    """Raised when a lake is opened read-only before its first ingest created it."""


class PromotionError(ConfigurationError):
    """Raised for a promotion or rollback that cannot be done as asked (not built, no comparison, nothing before)."""


class FingerprintMismatchError(ProjectionDefinitionError):
    """Raised when a projection's code or schema changed since its version was built, without a version bump."""


class ComparisonError(TerminalError):
    """Raised when two relations cannot be compared as asked (unknown relation, missing key, bad predicate)."""
