"""Versioned projection tables in the lake: rebuild, incremental project, promote, rollback, retention.

Each version of a projection lives in ``projections.<name>_v<N>``; ``meta.projection_versions``
records its state (``building`` → ``ready`` → ``live`` → ``retired``, and ``dropped`` after
retention), the code fingerprint it was built with and its checkpoint in the lake's
``(transaction_id, global_position)`` order. ``analytics.<name>`` is a view over the live version;
promotion swaps it, the state changes and ``meta.promotions`` in one DuckLake transaction.

A version whose code changed without a version bump (fingerprint differs from the recorded one)
is refused by :func:`project` and :func:`promote`; the fix is to bump the version, or to run
:func:`rebuild` of the same version, which replaces its table (explicitly) from the lake.

A rebuild works in chunks (ranges of stream ids, sized from the event count) committed one by one
to a staging table, ``projections._staging_<name>_v<N>``, with its progress in ``meta.rebuilds``; its
last commit renames the staging table over ``projections.<name>_v<N>`` together with the rows
count, state, checkpoint and dead letters. A rerun after a crash continues after the last
committed chunk. See docs/versions.md.

The modules, each importing only those before it: ``catalog`` (the meta tables, versions and
their states), ``lake_events`` (the events between two checkpoints), ``dead_lettering``,
``rebuild_plan`` (chunks, staging table, interrupted rebuilds), ``rebuilding`` (the chunked
rebuild), ``incremental`` (one version's incremental step), ``promotion`` (promote, rollback,
retain) and ``advance`` (``project``, ``advance_version``, ``lag``); ``sharding`` (a rebuild split into shards
that independent processes build at once, then swapped in once).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warehouse.errors import FingerprintMismatchError, PromotionError
    from warehouse.versions.advance import advance_version, lag, lags, project
    from warehouse.versions.catalog import (
        STATES,
        ProjectResult,
        VersionInfo,
        ensure_version_tables,
        list_versions,
        validate_target,
    )
    from warehouse.versions.dead_lettering import DeadLetter, dead_letters
    from warehouse.versions.lake_events import EVENTS
    from warehouse.versions.promotion import Promotion, latest_comparison, promote, retain, rollback, rollback_target
    from warehouse.versions.rebuild_plan import CHUNK_EVENTS, UnfinishedRebuild, resumable_rebuild, unfinished_rebuilds
    from warehouse.versions.rebuilding import rebuild
    from warehouse.versions.sharding import ShardPlan, build_shard, finish_shards, plan_shards

__all__ = [
    "CHUNK_EVENTS",
    "EVENTS",
    "STATES",
    "DeadLetter",
    "FingerprintMismatchError",
    "ProjectResult",
    "Promotion",
    "PromotionError",
    "ShardPlan",
    "UnfinishedRebuild",
    "VersionInfo",
    "advance_version",
    "build_shard",
    "dead_letters",
    "ensure_version_tables",
    "finish_shards",
    "lag",
    "lags",
    "latest_comparison",
    "list_versions",
    "plan_shards",
    "project",
    "promote",
    "rebuild",
    "resumable_rebuild",
    "retain",
    "rollback",
    "rollback_target",
    "unfinished_rebuilds",
    "validate_target",
]

#: Where each re-exported name lives: imported on first use, so importing one submodule of the package
#: (``versions.errors``, say) does not load them all (and their DuckDB, polars, pyarrow).
_EXPORTS = {
    "FingerprintMismatchError": "warehouse.errors",
    "PromotionError": "warehouse.errors",
    "advance_version": "warehouse.versions.advance",
    "lag": "warehouse.versions.advance",
    "lags": "warehouse.versions.advance",
    "project": "warehouse.versions.advance",
    "STATES": "warehouse.versions.catalog",
    "ProjectResult": "warehouse.versions.catalog",
    "VersionInfo": "warehouse.versions.catalog",
    "ensure_version_tables": "warehouse.versions.catalog",
    "list_versions": "warehouse.versions.catalog",
    "validate_target": "warehouse.versions.catalog",
    "DeadLetter": "warehouse.versions.dead_lettering",
    "dead_letters": "warehouse.versions.dead_lettering",
    "EVENTS": "warehouse.versions.lake_events",
    "Promotion": "warehouse.versions.promotion",
    "latest_comparison": "warehouse.versions.promotion",
    "promote": "warehouse.versions.promotion",
    "retain": "warehouse.versions.promotion",
    "rollback": "warehouse.versions.promotion",
    "rollback_target": "warehouse.versions.promotion",
    "CHUNK_EVENTS": "warehouse.versions.rebuild_plan",
    "UnfinishedRebuild": "warehouse.versions.rebuild_plan",
    "resumable_rebuild": "warehouse.versions.rebuild_plan",
    "unfinished_rebuilds": "warehouse.versions.rebuild_plan",
    "rebuild": "warehouse.versions.rebuilding",
    "ShardPlan": "warehouse.versions.sharding",
    "build_shard": "warehouse.versions.sharding",
    "finish_shards": "warehouse.versions.sharding",
    "plan_shards": "warehouse.versions.sharding",
}


def __getattr__(name: str) -> Any:
    """A re-exported name, imported from its module on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
