"""``--tenant T`` of ``rebuild``, ``promote`` and ``rollback``: one tenant's rows of a per-tenant projection.

The commands themselves live in :mod:`pipelines.cli.versions`; with ``--tenant`` they hand over to these
(``diff --tenant`` passes the tenant to :func:`warehouse.diff.compare_versions`).
"""

from __future__ import annotations

import click

from pipelines.cli.base import settings
from projections import discover
from warehouse.lake import LakeConfig, open_lake
from warehouse.versions.tenants import promote_tenant, rebuild_tenant, rollback_tenant

__all__ = ["promote_one_tenant", "rebuild_one_tenant", "rollback_one_tenant"]


def rebuild_one_tenant(name: str, version: int, tenant: str) -> None:
    """``rebuild NAME --version N --tenant T``."""
    registry = discover()
    con = open_lake(LakeConfig.from_settings(settings()))
    try:
        result = rebuild_tenant(con, registry, name, version, tenant)
    finally:
        con.close()
    poison = f", {result.dead_letters:,} dead-lettered" if result.dead_letters else ""
    click.echo(
        f"{name} v{version} tenant {tenant}: {result.rows:,} rows from {result.events:,} events{poison}, checkpoint "
        f"{result.checkpoint}; other tenants' rows untouched ({result.seconds:.1f} s)"
    )


def promote_one_tenant(name: str, version: int, tenant: str, force: bool, dry_run: bool) -> None:
    """``promote NAME N --tenant T``."""
    registry = discover()
    con = open_lake(LakeConfig.from_settings(settings()))
    try:
        promotion = promote_tenant(con, registry, name, version, tenant, force=force, dry_run=dry_run)
    finally:
        con.close()
    gate = f" (comparison {promotion.comparison_id})" if promotion.comparison_id else ""
    if dry_run:
        click.echo(
            f"dry run: tenant {tenant} of {name} would be served from v{version} (was v{promotion.from_version})"
            f"{gate}; nothing was changed"
        )
        return
    click.echo(
        f"{name}: tenant {tenant} is served from v{version} (was v{promotion.from_version}){gate}; "
        "other tenants unchanged"
    )


def rollback_one_tenant(name: str, tenant: str, dry_run: bool) -> None:
    """``rollback NAME --tenant T``."""
    registry = discover()
    con = open_lake(LakeConfig.from_settings(settings()))
    try:
        promotion = rollback_tenant(con, registry, name, tenant, dry_run=dry_run)
    finally:
        con.close()
    if dry_run:
        click.echo(
            f"dry run: tenant {tenant} of {name} would be served from v{promotion.to_version} again "
            f"(now v{promotion.from_version}); nothing was changed"
        )
        return
    click.echo(f"{name}: tenant {tenant} is served from v{promotion.to_version} again (was v{promotion.from_version})")
