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

from warehouse.errors import FingerprintMismatchError, PromotionError
from warehouse.versions.advance import advance_version, lag, project
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
