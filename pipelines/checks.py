"""Asset checks: candidate vs live, projection lag, dead letters, schema drift, stream length."""

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from pipelines.assets import RAW_EVENTS, STREAM_STATS, version_key
from pipelines.failures import as_failure
from pipelines.resources import ProjectionistResource, current_registry
from projections import Projection, Registry
from warehouse.diff import check_expectation, compare_versions, expectation_for, render_markdown

__all__ = ["build_checks"]


def _run_started(context: dg.AssetCheckExecutionContext) -> datetime:
    stats = context.instance.get_run_stats(context.run.run_id)
    started = stats.start_time or stats.launch_time
    return datetime.fromtimestamp(started, UTC) if started else datetime.now(UTC)


def _version_checks(projection: Projection) -> list[dg.AssetChecksDefinition]:
    name, version = projection.name, projection.version
    key = version_key(name, version)

    @dg.asset_check(
        asset=key,
        name="matches_live",
        description=(
            "Compares this version with the live one row by row (warehouse.diff) and checks the differences stay "
            "inside the changes the projection declares. Passes trivially for the live version itself."
        ),
        blocking=False,
    )
    def matches_live(projectionist: ProjectionistResource) -> dg.AssetCheckResult:
        from warehouse import versions

        registry = current_registry()
        with as_failure(f"comparing {name} v{version} with the live version"), projectionist.lake_connection() as con:
            states = {v.version: v.state for v in versions.list_versions(con, name)}
            live = next((v for v, s in states.items() if s == "live"), None)
            if live is None or live == version or version not in states:
                reason = "is the live version" if live == version else "has nothing to compare with yet"
                return dg.AssetCheckResult(passed=True, metadata={"note": f"{name} v{version} {reason}"})
            comparison, comparison_id = compare_versions(con, registry, name, live, version)
            expected = check_expectation(con, comparison, expectation_for(registry, name, comparison, version))
        return dg.AssetCheckResult(
            passed=expected.satisfied,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "comparison_id": comparison_id,
                "summary": dg.MetadataValue.md(render_markdown(comparison) + "\n\n" + str(expected)),
                "changed_rows": dg.MetadataValue.int(comparison.rows["changed"].count),
                "undeclared_differences": dg.MetadataValue.int(expected.violating_rows),
            },
        )

    @dg.asset_check(
        asset=key,
        name="lag_within_bound",
        description="The version is at most `max_lag_events` events behind the lake's ingest checkpoint.",
    )
    def lag_within_bound(projectionist: ProjectionistResource) -> dg.AssetCheckResult:
        from warehouse import versions

        with as_failure(f"checking the lag of {name} v{version}"), projectionist.lake_connection(read_only=True) as con:
            state = next((v.state for v in versions.list_versions(con, name) if v.version == version), None)
            events, seconds = versions.lag(con, name, version) if state in ("live", "ready") else (0, None)
        if state not in ("live", "ready"):
            # Only live and ready versions advance: a retired (or unbuilt) one is behind on purpose.
            why = "is not in the lake" if state is None else f"is {state}: it does not advance"
            return dg.AssetCheckResult(passed=True, metadata={"note": f"{name} v{version} {why}"})
        return dg.AssetCheckResult(
            passed=events <= projectionist.max_lag_events,
            metadata={
                "lag_events": dg.MetadataValue.int(events),
                "lag_seconds": dg.MetadataValue.float(float(seconds or 0.0)),
                "bound_events": dg.MetadataValue.int(projectionist.max_lag_events),
            },
        )

    @dg.asset_check(
        asset=key,
        name="no_new_dead_letters",
        description="No event was dead-lettered for this version during this run.",
    )
    def no_new_dead_letters(
        context: dg.AssetCheckExecutionContext, projectionist: ProjectionistResource
    ) -> dg.AssetCheckResult:
        from warehouse import versions

        since = _run_started(context)
        with as_failure(f"reading the dead letters of {name}"), projectionist.lake_connection(read_only=True) as con:
            letters = [d for d in versions.dead_letters(con, name=name, since=since) if d.version == version]
        sample = [{"event_id": d.event_id, "position": d.global_position, "reason": d.reason} for d in letters[:10]]
        return dg.AssetCheckResult(
            passed=not letters,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"new_dead_letters": dg.MetadataValue.int(len(letters)), "sample": dg.MetadataValue.json(sample)},
        )

    return [matches_live, lag_within_bound, no_new_dead_letters]


def _schema_drift(registry: Registry) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=RAW_EVENTS,
        name="no_unhandled_event_types",
        description=(
            "Every event type and version in the lake (analytics.event_catalog) is consumed by a projection, "
            "directly or through upcasters: anything else is schema drift nobody reads. Fails naming them."
        ),
    )
    def no_unhandled_event_types(projectionist: ProjectionistResource) -> dg.AssetCheckResult:
        from warehouse.event_catalog import catalog_entries, refresh_event_catalog, unhandled_entries

        with as_failure("reading the event catalog"), projectionist.lake_connection() as con:
            refresh_event_catalog(con)
            entries = catalog_entries(con, current_registry())
        unhandled = unhandled_entries(entries)
        named = "; ".join(
            f"{e.event_type} v{e.event_version} ({e.events:,} events of stream type {e.stream_type or '-'})"
            for e in unhandled
        )
        return dg.AssetCheckResult(
            passed=not unhandled,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"unhandled event types and versions: {named}" if unhandled else None,
            metadata={
                "unhandled": dg.MetadataValue.json(
                    [
                        {
                            "stream_type": e.stream_type,
                            "event_type": e.event_type,
                            "event_version": e.event_version,
                            "events": e.events,
                            "why": next(f for f in e.flags if f.startswith("unhandled")),
                        }
                        for e in unhandled
                    ]
                ),
                "types_seen": dg.MetadataValue.int(len(entries)),
            },
        )

    return no_unhandled_event_types


@dg.asset_check(
    asset=RAW_EVENTS,
    name="no_private_values_in_analytics",
    description=(
        "No value of a field declared private (PUBLIC_FIELDS, docs/governance.md) appears in any text column of "
        "any view of analytics.*: checked against the data, whatever the projection's body. Fails naming the "
        "column and the field."
    ),
)
def no_private_values_in_analytics(projectionist: ProjectionistResource) -> dg.AssetCheckResult:
    from warehouse.privacy import private_leaks

    registry = current_registry()
    with as_failure("looking for private values in analytics.*"), projectionist.lake_connection() as con:
        leaks = private_leaks(con, registry)
    return dg.AssetCheckResult(
        passed=not leaks,
        description="; ".join(str(leak) for leak in leaks) or None,
        metadata={
            "leaks": dg.MetadataValue.json([leak.__dict__ for leak in leaks]),
            "declarations": dg.MetadataValue.int(len(registry.fields)),
        },
    )


@dg.asset_check(
    asset=STREAM_STATS,
    name="streams_are_short_lived",
    description=(
        "No stream's first and last events lie more than PROJECTIONIST_LONG_STREAM_DAYS apart: a stream that "
        "lives on and on is one to close (and archive) or to split."
    ),
)
def streams_are_short_lived(projectionist: ProjectionistResource) -> dg.AssetCheckResult:
    from warehouse.stream_health import long_lived_sql

    days = projectionist.settings().long_stream_days
    lived = long_lived_sql(days)
    with as_failure("reading analytics.stream_stats"), projectionist.lake_connection(read_only=True) as con:
        rows = con.execute(
            f"SELECT stream_id, events, first_event_at, last_event_at FROM analytics.stream_stats WHERE {lived} "
            "ORDER BY duration DESC, stream_id LIMIT 10"
        ).fetchall()
        count = con.execute(f"SELECT count(*) FROM analytics.stream_stats WHERE {lived}").fetchone()
    longest = [
        {"stream_id": s, "events": int(n), "first_event_at": str(a), "last_event_at": str(b)} for s, n, a, b in rows
    ]
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{int(count[0]) if count else 0} stream(s) lived longer than {days:g} days; longest: "
            + ", ".join(r["stream_id"] for r in longest[:3])
            if rows
            else None
        ),
        metadata={
            "long_lived_streams": dg.MetadataValue.int(int(count[0]) if count else 0),
            "longest": dg.MetadataValue.json(longest),
            "long_stream_days": dg.MetadataValue.float(days),
        },
    )


@dg.asset_check(
    asset=STREAM_STATS,
    name="streams_are_short",
    description="No stream is longer than the threshold (`long_stream_threshold`): keep streams short.",
)
def streams_are_short(projectionist: ProjectionistResource) -> dg.AssetCheckResult:
    with as_failure("reading analytics.stream_stats"), projectionist.lake_connection(read_only=True) as con:
        rows = con.execute(
            "SELECT stream_id, events FROM analytics.stream_stats WHERE events > ? ORDER BY events DESC LIMIT 10",
            [projectionist.long_stream_threshold],
        ).fetchall()
        count = con.execute(
            "SELECT count(*) FROM analytics.stream_stats WHERE events > ?", [projectionist.long_stream_threshold]
        ).fetchone()
    return dg.AssetCheckResult(
        passed=not rows,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "long_streams": dg.MetadataValue.int(int(count[0]) if count else 0),
            "longest": dg.MetadataValue.json([{"stream_id": s, "events": int(n)} for s, n in rows]),
            "threshold": dg.MetadataValue.int(projectionist.long_stream_threshold),
        },
    )


def build_checks(registry: Registry) -> Sequence[dg.AssetChecksDefinition]:
    """Every asset check for the projections in ``registry``."""
    checks: list[dg.AssetChecksDefinition] = [
        _schema_drift(registry),
        no_private_values_in_analytics,
        streams_are_short,
        streams_are_short_lived,
    ]
    for projection in registry:
        checks.extend(_version_checks(projection))
    return checks
