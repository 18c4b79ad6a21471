"""The warehouse: a DuckLake of raw events (``raw.events``), analytics views, checkpoints; see docs/lake.md."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warehouse.analytics import refresh_analytics
    from warehouse.errors import LakeConfigurationError, LakeUnavailableError
    from warehouse.ingest import EventSource, IngestResult, compact, lake_checkpoint
    from warehouse.lake import RAW_EVENT_COLUMNS, LakeConfig, open_lake, retry_conflicts
    from warehouse.sources import StoreSource, close_source, open_source
    from warehouse.status import LakeStatus, lake_status

__all__ = [
    "RAW_EVENT_COLUMNS",
    "EventSource",
    "IngestResult",
    "LakeConfig",
    "LakeConfigurationError",
    "LakeStatus",
    "LakeUnavailableError",
    "StoreSource",
    "close_source",
    "compact",
    "lake_checkpoint",
    "lake_status",
    "open_lake",
    "open_source",
    "refresh_analytics",
    "retry_conflicts",
]

#: Where each re-exported name lives: imported on first use, so importing one submodule of the package
#: (``warehouse.errors``, say) does not load them all (and their DuckDB, polars, pyarrow). The ingest
#: function is ``warehouse.ingest.ingest``: ``warehouse.ingest`` names its module.
_EXPORTS = {
    "refresh_analytics": "warehouse.analytics",
    "LakeConfigurationError": "warehouse.errors",
    "LakeUnavailableError": "warehouse.errors",
    "EventSource": "warehouse.ingest",
    "IngestResult": "warehouse.ingest",
    "compact": "warehouse.ingest",
    "lake_checkpoint": "warehouse.ingest",
    "RAW_EVENT_COLUMNS": "warehouse.lake",
    "LakeConfig": "warehouse.lake",
    "open_lake": "warehouse.lake",
    "retry_conflicts": "warehouse.lake",
    "StoreSource": "warehouse.sources",
    "close_source": "warehouse.sources",
    "open_source": "warehouse.sources",
    "LakeStatus": "warehouse.status",
    "lake_status": "warehouse.status",
}


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
