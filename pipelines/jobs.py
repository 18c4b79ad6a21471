"""Jobs (typed config), the ingest schedule and the sensor on the event store's safe head."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import duckdb
import psycopg

from eventstore.errors import ProjectionistError
from eventstore.failures import translate
from pipelines.assets import RAW_EVENTS, WRITER_POOL, analytics_key, version_key
from pipelines.failures import RETRY_POLICY, as_failure
from pipelines.resources import ProjectionistResource, current_registry
from projections import Registry
from warehouse.errors import LakeNotCreatedError, PromotionError
from warehouse.progress import LOG_SECONDS, every

__all__ = ["build_automation", "build_jobs"]


class RebuildConfig(dg.Config):
    """Which projection version to rebuild from the lake."""

    name: str
    version: int


class CompareConfig(dg.Config):
    """Which versions to compare; A defaults to the live version, B to the newest candidate."""

    name: str
    a: int | None = None
    b: int | None = None
    sample_size: int = 5


class PromoteConfig(dg.Config):
    """Which version to make live; ``force`` skips the comparison gate."""

    name: str
    version: int
    force: bool = False


def _target(name: str, version: int | None) -> tuple[Registry, int | None]:
    """Refuse an unknown projection or version before anything is written (terminal: no retry)."""
    from warehouse import versions

    registry = current_registry()
    with as_failure(f"checking {name} v{version}" if version else f"checking {name}"):
        projection = versions.validate_target(registry, name, version)
    return registry, projection.version


@dg.op(
    pool=WRITER_POOL,
    retry_policy=RETRY_POLICY,
    description="Rebuild a projection version from raw.events beside the live one.",
)
def rebuild_version(
    context: dg.OpExecutionContext, config: RebuildConfig, projectionist: ProjectionistResource
) -> None:
    from warehouse import versions

    registry, version = _target(config.name, config.version)
    assert version is not None
    with as_failure(f"rebuilding {config.name} v{version}"), projectionist.lake_connection() as con:
        result = versions.rebuild(
            con,
            registry,
            config.name,
            version,
            progress=lambda n: context.log.info(f"committed {n:,} events"),
            events_done=every(
                LOG_SECONDS, lambda n: context.log.info(f"{config.name} v{version}: {n:,} events so far")
            ),
        )
        info = {v.version: v for v in versions.list_versions(con, config.name)}[version]
    context.log.info(f"rebuilt {config.name} v{version}: {result.rows:,} rows from {result.events:,} events")
    context.log_event(
        dg.AssetMaterialization(
            asset_key=version_key(config.name, version),
            metadata={
                "rows": dg.MetadataValue.int(info.rows),
                "state": info.state,
                "checkpoint": str(info.checkpoint),
                "build_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
                "dead_letters": dg.MetadataValue.int(result.dead_letters),
            },
        )
    )


class ShardedRebuildConfig(dg.Config):
    name: str
    version: int
    shards: int = 4


#: What flows from the plan to each shard's op and on to the swap: (projection, version, shard).
Shard = tuple[str, int, int]


@dg.op(
    out=dg.DynamicOut(),
    retry_policy=RETRY_POLICY,
    description="Plan a sharded rebuild (ranges of stream ids up to the lake's checkpoint); one output per shard.",
)
def plan_rebuild_shards(
    context: dg.OpExecutionContext, config: ShardedRebuildConfig, projectionist: ProjectionistResource
) -> Iterator[dg.DynamicOutput[Shard]]:
    from warehouse import versions

    registry, version = _target(config.name, config.version)
    assert version is not None
    with as_failure(f"planning shards of {config.name} v{version}"), projectionist.lake_connection() as con:
        plan = versions.plan_shards(con, registry, config.name, version, config.shards)
    kept = f"; {len(plan.done)} built by an earlier run are kept" if plan.done else ""
    context.log.info(f"{config.name} v{version}: {plan.events:,} events in {plan.shards} shards{kept}")
    for shard in range(plan.shards):  # a shard built already is skipped by its own op
        yield dg.DynamicOutput((config.name, version, shard), mapping_key=f"shard_{shard}")


@dg.op(
    retry_policy=RETRY_POLICY,
    description="Build one shard of a planned sharded rebuild into a table of its own (shards run side by side).",
)
def build_rebuild_shard(context: dg.OpExecutionContext, projectionist: ProjectionistResource, shard: Shard) -> Shard:
    from warehouse import versions

    name, version, index = shard
    registry, _ = _target(name, version)
    with as_failure(f"building shard {index} of {name} v{version}"), projectionist.lake_connection() as con:
        rows, dead = versions.build_shard(con, registry, name, version, index)
    context.log.info(f"{name} v{version} shard {index}: {rows:,} rows" + (f", {dead:,} dead-lettered" if dead else ""))
    return shard


@dg.op(
    pool=WRITER_POOL,
    retry_policy=RETRY_POLICY,
    description="Swap the built shards in as the version's table, in one commit.",
)
def finish_rebuild_shards(
    context: dg.OpExecutionContext, projectionist: ProjectionistResource, shards: list[Shard]
) -> None:
    from warehouse import versions

    name, version, _ = shards[0]
    registry, _ = _target(name, version)
    with as_failure(f"swapping in the shards of {name} v{version}"), projectionist.lake_connection() as con:
        result = versions.finish_shards(con, registry, name, version)
        info = {v.version: v for v in versions.list_versions(con, name)}[version]
    context.log.info(f"rebuilt {name} v{version} in {result.chunks} shards: {result.rows:,} rows")
    context.log_event(
        dg.AssetMaterialization(
            asset_key=version_key(name, version),
            metadata={
                "rows": dg.MetadataValue.int(info.rows),
                "state": info.state,
                "checkpoint": str(info.checkpoint),
                "shards": dg.MetadataValue.int(result.chunks),
                "dead_letters": dg.MetadataValue.int(result.dead_letters),
            },
        )
    )


@dg.op(
    retry_policy=RETRY_POLICY, description="Compare two versions of a projection row by row and record the comparison."
)
def compare_two_versions(
    context: dg.OpExecutionContext, config: CompareConfig, projectionist: ProjectionistResource
) -> None:
    from warehouse.diff import check_expectation, compare_versions, expectation_for, render_markdown, resolve_pair

    registry, _ = _target(config.name, None)
    with as_failure(f"comparing versions of {config.name}"), projectionist.lake_connection() as con:
        _, b = resolve_pair(con, registry, config.name, config.a, config.b)
        comparison, comparison_id = compare_versions(
            con, registry, config.name, config.a, config.b, sample_size=config.sample_size
        )
        expected = check_expectation(con, comparison, expectation_for(registry, config.name, comparison, b))
    context.log.info(f"comparison {comparison_id} recorded\n{render_markdown(comparison)}\n\n{expected}")


def _is_live(con: duckdb.DuckDBPyConnection, name: str, version: int) -> bool:
    from warehouse import versions

    return any(v.version == version and v.state == "live" for v in versions.list_versions(con, name))


@dg.op(
    pool=WRITER_POOL,
    retry_policy=RETRY_POLICY,
    description="Swap analytics.<name> to a version atomically (gated by a comparison).",
)
def promote_version(
    context: dg.OpExecutionContext, config: PromoteConfig, projectionist: ProjectionistResource
) -> None:
    from warehouse import versions

    registry, version = _target(config.name, config.version)
    assert version is not None
    actor = f"dagster run {context.run.run_id}"
    with as_failure(f"promoting {config.name} v{version}"), projectionist.lake_connection() as con:
        if _is_live(con, config.name, version):
            context.log.info(f"{config.name} v{version} is already live: nothing to do")
            return
        try:
            promotion = versions.promote(con, registry, config.name, version, force=config.force, actor=actor)
        except PromotionError:
            if _is_live(con, config.name, version):  # a concurrent run promoted it first: the same outcome
                context.log.info(f"{config.name} v{version} was made live by another run meanwhile")
                return
            raise
    context.log.info(
        f"analytics.{config.name} now shows v{promotion.to_version} (was v{promotion.from_version}); "
        f"comparison {promotion.comparison_id}"
    )
    context.log_event(
        dg.AssetMaterialization(
            asset_key=analytics_key(config.name),
            description=f"promoted v{promotion.to_version}",
            metadata={
                "live_version": dg.MetadataValue.int(promotion.to_version),
                "previous_version": str(promotion.from_version) if promotion.from_version else "none",
                "comparison_id": promotion.comparison_id or "none (forced or first)",
            },
        )
    )


class MaintainConfig(dg.Config):
    """How old a superseded snapshot must be to expire (a duration: 7d, 12h, 30m, 0s)."""

    older_than: str = "7d"


@dg.op(
    pool=WRITER_POOL,
    retry_policy=RETRY_POLICY,
    description=(
        "Lake maintenance (projectionist maintain): merge small files of every table, expire snapshots superseded "
        "longer ago than older_than, delete the files no snapshot needs; never what time travel or a rebuild needs."
    ),
)
def maintain_the_lake(
    context: dg.OpExecutionContext, config: MaintainConfig, projectionist: ProjectionistResource
) -> dg.Output[None]:
    from eventstore.settings import parse_duration
    from warehouse.maintenance import maintain

    with as_failure("maintaining the lake"):
        age = parse_duration(config.older_than, "older_than")
        window = projectionist.settings().time_travel_window
        with projectionist.lake_connection() as con:
            done = maintain(con, older_than=age, window=window)
    context.log.info(f"expired {len(done.expired)} snapshots, deleted {done.files_deleted} files")
    return dg.Output(
        None,
        metadata={
            "expired_snapshots": dg.MetadataValue.int(len(done.expired)),
            "files_deleted": dg.MetadataValue.int(done.files_deleted),
            "bytes_before": dg.MetadataValue.int(done.before.disk_bytes or 0),
            "bytes_after": dg.MetadataValue.int(done.after.disk_bytes or 0),
            "live_bytes": dg.MetadataValue.int(done.after.live_bytes),
            "kept_for": dg.MetadataValue.json(done.pins.reasons),
        },
    )


@dg.job(description="Lake maintenance: expire old snapshots, delete unneeded files, merge small ones (older_than).")
def maintain_lake() -> None:
    maintain_the_lake()


@dg.job(description="Rebuild one projection version from the lake (config: name, version).")
def rebuild_projection() -> None:
    rebuild_version()


@dg.job(
    description=(
        "Rebuild one projection version in shards built side by side by the executor's processes, then swapped "
        "in once (config: name, version, shards)."
    )
)
def rebuild_projection_sharded() -> None:
    finish_rebuild_shards(plan_rebuild_shards().map(build_rebuild_shard).collect())


@dg.job(description="Compare two versions of a projection (config: name, a, b) and record the report.")
def compare_versions() -> None:
    compare_two_versions()


@dg.job(description="Promote a projection version to live (config: name, version, force).")
def promote_projection() -> None:
    promote_version()


def build_jobs(registry: Registry) -> list[Any]:
    """The five jobs."""
    project_selection = dg.AssetSelection.assets(RAW_EVENTS) | dg.AssetSelection.groups("projections", "stream_health")
    ingest_and_project = dg.define_asset_job(
        "ingest_and_project",
        selection=project_selection,
        description="Ingest new events into the lake, then bring every projection version up to date.",
        # One process for every step: a process per step (the default) re-imports Dagster, DuckDB and
        # the projections about twenty times, which made a scheduled run on an idle store take about
        # two minutes of a 2-core machine; the steps of a run wait on one another anyway (the pools).
        executor_def=dg.in_process_executor,
    )
    return [
        ingest_and_project,
        rebuild_projection,
        rebuild_projection_sharded,
        compare_versions,
        promote_projection,
        maintain_lake,
    ]


def _skip_tick(exc: Exception, what: str) -> dg.SensorResult:
    """A transient failure skips a sensor's tick (the next one tries again); a terminal one is raised."""
    error = translate(exc, what)
    if not error.retryable:
        raise error from exc
    return dg.SensorResult(skip_reason=f"{error} (transient: the next tick tries again)")


def build_automation(
    registry: Registry | None = None,
) -> tuple[list[dg.ScheduleDefinition], list[dg.SensorDefinition]]:
    """The schedules (ingest every 5 minutes, maintenance nightly) and the head sensor, stopped until turned on, and
    the lake observer.

    The observer runs by default: it launches nothing, it reports to the instance what was done to
    the lake outside Dagster (:mod:`pipelines.lake_sync`).
    """
    assets = {(p.name, p.version) for p in (registry if registry is not None else current_registry())}
    schedule = dg.ScheduleDefinition(
        name="ingest_and_project_every_5_minutes",
        job_name="ingest_and_project",
        cron_schedule="*/5 * * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Runs ingest_and_project every 5 minutes.",
    )
    nightly = dg.ScheduleDefinition(
        name="maintain_lake_nightly",
        job_name="maintain_lake",
        cron_schedule="30 3 * * *",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Runs maintain_lake at 03:30 every night (snapshots superseded more than 7 days ago expire).",
    )

    @dg.sensor(
        name="event_store_head",
        job_name="ingest_and_project",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=(
            "Requests ingest_and_project when the event store's safe head moved since the last request "
            "(cursor: the last settled event's transaction_id/global_position); nothing when it did not."
        ),
    )
    def event_store_head(context: dg.SensorEvaluationContext, projectionist: ProjectionistResource) -> dg.SensorResult:
        try:
            with projectionist.event_source() as source:
                head = str(source.head().last)
        except (ProjectionistError, duckdb.Error, psycopg.Error) as exc:
            return _skip_tick(exc, "reading the event store's head")
        if head == context.cursor:
            return dg.SensorResult(skip_reason=f"safe head unchanged at {head}")
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"head-{head}")], cursor=head)

    @dg.sensor(
        name="lake_observer",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Reports what the CLI or `projectionist follow` did to the lake (ingest, project, rebuild, promote) "
            "as runless materializations, so the assets show the lake as it is; it never launches a run."
        ),
    )
    def lake_observer(context: dg.SensorEvaluationContext, projectionist: ProjectionistResource) -> dg.SensorResult:
        from pipelines.lake_sync import lake_events

        try:
            with projectionist.lake_connection(read_only=True) as con:
                events = lake_events(context.instance, con, assets)
        except LakeNotCreatedError:
            return dg.SensorResult(skip_reason="the lake has not been created yet (nothing ingested)")
        except (ProjectionistError, duckdb.Error, psycopg.Error) as exc:
            return _skip_tick(exc, "reading the lake")
        if not events:
            return dg.SensorResult(skip_reason="the assets show the lake as it is")
        return dg.SensorResult(asset_events=list(events))

    return [schedule, nightly], [event_store_head, lake_observer]
