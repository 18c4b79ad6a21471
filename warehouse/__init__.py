"""The warehouse: a DuckLake of raw events (``raw.events``), analytics views, checkpoints; see docs/lake.md."""

from warehouse.analytics import refresh_analytics
from warehouse.errors import LakeConfigurationError, LakeUnavailableError
from warehouse.ingest import EventSource, IngestResult, compact, ingest, lake_checkpoint
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
    "ingest",
    "lake_checkpoint",
    "lake_status",
    "open_lake",
    "open_source",
    "refresh_analytics",
    "retry_conflicts",
]
