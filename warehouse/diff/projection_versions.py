"""Diffing two versions of a projection in the lake: the comparison the promotion gate asks for.

``compare_versions`` compares ``projections.<name>_v<A>`` (default: the live version) with
``projections.<name>_v<B>`` (default: the newest ready candidate) on the projection's key,
records the comparison in ``meta.comparisons`` and returns it with its id. Sample rows carry their
source events (the trail from ``raw.all_events``) when the key is the stream id; for projections
keyed otherwise (``stream_keys``) no trail is attached, as a key's events are not one stream.
``expectation_for`` maps the candidate's declared ``expected_changes`` onto a diff expectation.
"""

from __future__ import annotations

import duckdb

from eventstore.errors import ConfigurationError
from projections import Registry
from warehouse.diff.compare import TrailSpec, compare
from warehouse.diff.expectations import Expectation
from warehouse.diff.model import Comparison
from warehouse.diff.store import record
from warehouse.versions import EVENTS, list_versions, validate_target
from warehouse.versions.tenants import check_tenant, per_tenant_projection, tenant_relation, tenant_versions

__all__ = ["compare_versions", "expectation_for", "resolve_pair"]


def resolve_pair(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    a: int | None = None,
    b: int | None = None,
    *,
    tenant: str | None = None,
) -> tuple[int, int]:
    """The versions to compare: ``a`` defaults to the live one, ``b`` to the newest ready candidate.

    With ``tenant`` (checked first: a per-tenant projection, a tenant the lake has), ``a`` defaults to the
    version that tenant's rows are served from.
    """
    validate_target(registry, name)
    if tenant is not None:
        per_tenant_projection(registry, name)
        check_tenant(con, tenant)
        if a is None:
            a = tenant_versions(con, name).get(tenant)
    versions = {v.version: v for v in list_versions(con, name)}
    if a is None:
        live = [v.version for v in versions.values() if v.state == "live"]
        if not live:
            raise ConfigurationError(f"{name} has no live version: name both versions, e.g. `diff {name} 1 2`.")
        a = live[0]
    if b is None:
        candidates = sorted(v.version for v in versions.values() if v.state == "ready" and v.version != a)
        if not candidates:
            raise ConfigurationError(
                f"{name} has no ready candidate besides v{a}: run `projectionist rebuild {name} --version N` first."
            )
        b = candidates[-1]
    for version in (a, b):
        validate_target(registry, name, version)
        info = versions.get(version)
        if info is None or info.state in ("building", "dropped"):
            state = "not built" if info is None else info.state
            raise ConfigurationError(
                f"{name} v{version} is {state}: run `projectionist rebuild {name} --version {version}` first."
            )
    return a, b


def compare_versions(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    name: str,
    a: int | None = None,
    b: int | None = None,
    *,
    sample_size: int = 5,
    tolerances: dict[str, float] | None = None,
    tenant: str | None = None,
) -> tuple[Comparison, str]:
    """Compare two versions of ``name`` (default: live against the newest candidate); record it; return it, its id.

    With ``tenant`` (a per-tenant projection), only that tenant's rows are compared, and ``a`` defaults to the
    version the tenant's rows are served from; the comparison is recorded for that tenant's promotion gate.
    """
    a, b = resolve_pair(con, registry, name, a, b, tenant=tenant)
    projection = validate_target(registry, name, b)
    trail = TrailSpec(events=EVENTS) if projection.keyed_by_stream else None
    a_rel, b_rel = f"lake.projections.{name}_v{a}", f"lake.projections.{name}_v{b}"
    if tenant is not None:
        a_rel, b_rel = tenant_relation(name, a, tenant), tenant_relation(name, b, tenant)
    comparison = compare(
        con,
        a_rel,
        b_rel,
        list(projection.key),
        tolerances=tolerances,
        sample_size=sample_size,
        trail=trail,
    )
    # record() writes on a cursor, whose default catalog is not the lake: name it.
    return comparison, record(con, comparison, schema="lake.meta")


def expectation_for(registry: Registry, name: str, comparison: Comparison, b: int) -> Expectation:
    """Version ``b``'s declared changes as a diff expectation.

    Columns the new version adds or drops are declared by its schema, so they are allowed; value
    changes are allowed only where an ``ExpectedChange`` says so; added or removed rows are not.
    """
    projection = validate_target(registry, name, b)
    return Expectation(
        changes=list(projection.expected_changes),
        added_columns=[c.name for c in comparison.schema.added],
        removed_columns=[c.name for c in comparison.schema.removed],
    )
