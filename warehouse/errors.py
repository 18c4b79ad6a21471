"""Errors of the warehouse (the DuckLake lake), placed in the tree of ``eventstore.errors``::

TransientError
 └── LakeUnavailableError     the catalog cannot be reached, or a commit kept losing conflicts
TerminalError
 └── LakeConfigurationError   the catalog or data path is unusable as configured (corrupt, unwritable)
"""

from __future__ import annotations

from eventstore.errors import ConfigurationError, TransientError

__all__ = ["LakeConfigurationError", "LakeUnavailableError"]


class LakeUnavailableError(TransientError):
    """Raised when the lake's catalog cannot be reached or a commit lost every retry of a catalog conflict."""


class LakeConfigurationError(ConfigurationError):
    """Raised when the lake's catalog or data path cannot work as configured (corrupt, unwritable, wrong kind)."""
