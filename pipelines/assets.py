"""Assets: the raw lake, one asset per registered projection version, the live analytics views.

The graph reads like the data flow: ``raw/events`` → ``analytics/stream_stats`` and
``analytics/event_volume_daily`` (stream health) and → ``projections/<name>/v<N>`` →
``analytics/<name>`` (the view analysts query, on the live version).

Dagster reads the annotations of decorated functions when they are defined: this module (like
checks.py and jobs.py) does not postpone annotations.
"""

import time
from collections.abc import Sequence

import dagster as dg

from eventstore.positions import START
from pipelines.failures import RETRY_POLICY, as_failure
from pipelines.resources import ProjectionistResource, current_registry
from projections import Projection, Registry
from projections.registry import declared_types, field_policy
from warehouse.analytics import refresh_analytics
from warehouse.event_catalog import catalog_batch, ensure_event_catalog, refresh_event_catalog
from warehouse.ingest import ingest, lake_checkpoint

__all__ = ["RAW_EVENTS", "WRITER_POOL", "analytics_key", "build_assets", "version_key"]

RAW_EVENTS = dg.AssetKey(["raw", "events"])
STREAM_STATS = dg.AssetKey(["analytics", "stream_stats"])
EVENT_VOLUME = dg.AssetKey(["analytics", "event_volume_daily"])
#: Every writer of projection tables is in this pool (limit 1 in dagster.yaml).
WRITER_POOL = "projectionist_writer"
INGEST_POOL = "projectionist_ingest"


def version_key(name: str, version: int) -> dg.AssetKey:
    """``projections/<name>/v<N>``."""
    return dg.AssetKey(["projections", name, f"v{version}"])


def analytics_key(name: str) -> dg.AssetKey:
    """``analytics/<name>``: the live view."""
    return dg.AssetKey(["analytics", name])


@dg.asset(
    key=RAW_EVENTS,
    group_name="raw",
    kinds={"postgres", "ducklake"},
    pool=INGEST_POOL,
    retry_policy=RETRY_POLICY,
    description=(
        "Every settled event of the event store, once, in raw.events (DuckLake): read gap-safe below the "
        "oldest open transaction and committed with its checkpoint in the same DuckLake commit."
    ),
    tags={"projectionist/layer": "raw"},
)
def raw_events(context: dg.AssetExecutionContext, projectionist: ProjectionistResource) -> dg.MaterializeResult[None]:
    """Ingest new events from the store into raw.events and refresh the analytics views."""
    started = time.monotonic()
    with (
        as_failure("ingesting raw/events"),
        projectionist.event_source() as source,
        projectionist.lake_connection() as con,
    ):
        before, _ = lake_checkpoint(con)
        ensure_event_catalog(con)
        result = ingest(
            con,
            source,
            progress=lambda n: context.log.info(f"committed a batch of {n:,} events"),
            # The event catalog in each batch's commit, reading the batch just written (as the CLI and follow).
            in_commit=catalog_batch,
        )
        declared = declared_types()
        views = refresh_analytics(
            con,
            long_stream_threshold=projectionist.long_stream_threshold,
            long_stream_days=projectionist.settings().long_stream_days,
            declared=declared,
            fields=field_policy(),
        )
        refresh_event_catalog(con)  # nothing to add unless the lake had no new events and the catalog lagged
        lag_events, _oldest = source.pending(result.checkpoint)
    seconds = time.monotonic() - started
    return dg.MaterializeResult(
        metadata={
            "from_position": str(before),
            "to_position": str(result.checkpoint),
            "events": dg.MetadataValue.int(result.events),
            "events_per_second": dg.MetadataValue.float(round(result.events / seconds, 1) if seconds else 0.0),
            "lag_events": dg.MetadataValue.int(lag_events),
            "store_safe_head": str(result.head.last),
            "commits": dg.MetadataValue.int(result.batches),
            "analytics_views_written": dg.MetadataValue.int(len(views)),
        }
    )


def _stream_health_asset(key: dg.AssetKey, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        key=key,
        deps=[RAW_EVENTS],
        group_name="stream_health",
        kinds={"duckdb"},
        retry_policy=RETRY_POLICY,
        description=description,
        tags={"projectionist/layer": "analytics"},
    )
    def _health(projectionist: ProjectionistResource) -> dg.MaterializeResult[None]:
        with as_failure(f"refreshing {key.to_user_string()}"), projectionist.lake_connection() as con:
            declared = declared_types()
            refresh_analytics(
                con,
                long_stream_threshold=projectionist.long_stream_threshold,
                long_stream_days=projectionist.settings().long_stream_days,
                declared=declared,
                fields=field_policy(),
            )
            table = f"analytics.{key.path[-1]}"
            row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
        return dg.MaterializeResult(metadata={"rows": dg.MetadataValue.int(int(row[0]) if row else 0)})

    return _health


stream_stats = _stream_health_asset(
    STREAM_STATS,
    "Per stream: type, event count, first/last event, duration, and whether it is longer than the "
    "threshold (keep streams short).",
)
event_volume_daily = _stream_health_asset(EVENT_VOLUME, "Events per day and event type.")


_KIND_TAG = {"sql": "sql", "polars": "polars", "fold": "python"}


def _column_schema(projection: Projection) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.type, description=c.description) for c in projection.output_columns]
    )


def _version_asset(projection: Projection) -> dg.AssetsDefinition:
    name, version = projection.name, projection.version

    @dg.asset(
        key=version_key(name, version),
        deps=[RAW_EVENTS],
        group_name="projections",
        kinds={"ducklake", _KIND_TAG[projection.kind]},
        pool=WRITER_POOL,
        retry_policy=RETRY_POLICY,
        code_version=f"v{version}-{projection.fingerprint[:12]}",
        description=f"{projection.description}\n\nTable `projections.{name}_v{version}`, key {list(projection.key)}.",
        metadata={"dagster/column_schema": _column_schema(projection), "key": list(projection.key)},
        tags={"projectionist/projection": name, "projectionist/layer": "projections"},
    )
    def _version(context: dg.AssetExecutionContext, projectionist: ProjectionistResource) -> dg.MaterializeResult[None]:
        from warehouse import versions

        registry = current_registry()
        with as_failure(f"materializing {name} v{version}"), projectionist.lake_connection() as con:
            known = {v.version: v for v in versions.list_versions(con, name)}
            if version not in known:
                context.log.info(f"{name} v{version} is not in the lake yet: rebuilding it from raw.events")
                result = versions.rebuild(con, registry, name, version)
                if version == max(registry.versions(name)) and not any(v.state == "live" for v in known.values()):
                    # As `projectionist project` does: a projection's first version goes live when built.
                    versions.promote(
                        con, registry, name, version, force=True, actor=f"dagster run {context.run.run_id} (first)"
                    )
                    context.log.info(f"{name} v{version} is the first live version of {name}")
            else:
                result = versions.advance_version(con, registry, name, version)
            info = {v.version: v for v in versions.list_versions(con, name)}[version]
            lag_events, lag_seconds = versions.lag(con, name, version)
        if not result.events and version in known:
            why = "is up to date" if info.state in ("live", "ready") else f"is {info.state} and does not advance"
            context.log.info(f"{name} v{version} {why} (checkpoint {info.checkpoint}): nothing to do")
        # The position range this materialization covered, in the lake's order (what `explain` lists
        # for a row is below "to_position"): a rebuild covers everything from the start.
        covered_from = known[version].checkpoint if version in known else START
        return dg.MaterializeResult(
            metadata={
                "rows": dg.MetadataValue.int(info.rows),
                "state": info.state,
                "checkpoint": str(info.checkpoint),
                "from_position": str(covered_from),
                "to_position": str(info.checkpoint),
                "events_applied": dg.MetadataValue.int(result.events),
                "keys_recomputed": dg.MetadataValue.int(result.keys),
                "dead_letters": dg.MetadataValue.int(result.dead_letters),
                "lag_events": dg.MetadataValue.int(lag_events),
                "lag_seconds": dg.MetadataValue.float(float(lag_seconds or 0.0)),
                "fingerprint": info.fingerprint,
                "dagster/row_count": dg.MetadataValue.int(info.rows),
            }
        )

    return _version


def _analytics_asset(name: str, projections: Sequence[Projection]) -> dg.AssetsDefinition:
    described = max(projections, key=lambda p: p.version)

    @dg.asset(
        key=analytics_key(name),
        deps=[version_key(name, p.version) for p in projections],
        group_name="analytics",
        kinds={"duckdb"},
        description=(
            f"`analytics.{name}`: the view analysts query, on the live version of {name} "
            "(switched atomically by promote, back by rollback)."
        ),
        metadata={"dagster/column_schema": _column_schema(described)},
        retry_policy=RETRY_POLICY,
        tags={"projectionist/projection": name, "projectionist/layer": "analytics"},
    )
    def _live(projectionist: ProjectionistResource) -> dg.MaterializeResult[None]:
        from warehouse import versions

        with as_failure(f"reading analytics.{name}"), projectionist.lake_connection(read_only=True) as con:
            live = [v for v in versions.list_versions(con, name) if v.state == "live"]
            if not live:
                raise dg.Failure(
                    f"{name} has no live version yet: run the promote_projection job "
                    f"(or `projectionist promote {name} N`)."
                )
            row = con.execute(f"SELECT count(*) FROM analytics.{name}").fetchone()
        return dg.MaterializeResult(
            metadata={
                "live_version": dg.MetadataValue.int(live[0].version),
                "rows": dg.MetadataValue.int(int(row[0]) if row else 0),
            }
        )

    return _live


def build_assets(registry: Registry) -> list[dg.AssetsDefinition]:
    """Every asset of the pipeline for the projections in ``registry``."""
    assets: list[dg.AssetsDefinition] = [raw_events, stream_stats, event_volume_daily]
    by_name: dict[str, list[Projection]] = {}
    for projection in registry:
        assets.append(_version_asset(projection))
        by_name.setdefault(projection.name, []).append(projection)
    for name, projections in sorted(by_name.items()):
        assets.append(_analytics_asset(name, projections))
    return assets
