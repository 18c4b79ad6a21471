"""The Dagster definitions of Projectionist, found by `dagster dev` from the repository root.

Resources come from the same environment variables as the CLI (``dg.EnvVar`` for those set,
the CLI's defaults otherwise); assets, checks and jobs are built from the projection registry,
so adding a projection module adds its assets.
"""

from __future__ import annotations

import dagster as dg

from pipelines.assets import build_assets
from pipelines.checks import build_checks
from pipelines.feeds import deliver_feeds, feed_consumers_behind
from pipelines.jobs import build_automation, build_jobs
from pipelines.resources import resource_from_env
from projections import Registry, discover

__all__ = ["build_definitions", "defs"]


def build_definitions(registry: Registry | None = None) -> dg.Definitions:
    """The definitions for ``registry`` (default: the discovered projections)."""
    registry = discover() if registry is None else registry
    schedules, sensors = build_automation(registry)
    return dg.Definitions(
        assets=build_assets(registry),
        asset_checks=build_checks(registry),
        jobs=[*build_jobs(registry), deliver_feeds],
        schedules=schedules,
        sensors=[*sensors, feed_consumers_behind],
        resources={"projectionist": resource_from_env()},
    )


defs = build_definitions()
