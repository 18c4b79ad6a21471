"""Dagster delivery of change feeds: the ``deliver_feeds`` job (one pass) and the ``feed_consumers_behind`` sensor.

The sensor requests a pass when a consumer's delivered version or checkpoint differs from its source's live
one (a project, a promotion or a reset happened since); an idle lake requests nothing.
"""

import dagster as dg
import duckdb
import psycopg

from eventstore.errors import ProjectionistError
from pipelines.assets import WRITER_POOL
from pipelines.failures import RETRY_POLICY, as_failure
from pipelines.resources import ProjectionistResource, current_registry
from warehouse.errors import LakeNotCreatedError

__all__ = ["deliver_feeds", "feed_consumers_behind"]


@dg.op(pool=WRITER_POOL, retry_policy=RETRY_POLICY, description="One delivery pass to every feed consumer.")
def deliver_to_consumers(context: dg.OpExecutionContext, projectionist: ProjectionistResource) -> None:
    from warehouse.feeds import deliver

    with as_failure("delivering the change feeds"), projectionist.lake_connection() as con:
        results = deliver(con, current_registry())
    for result in results:
        context.log.info(result.describe())


@dg.job(description="Deliver the change feeds of live projections to every consumer (docs/integration.md).")
def deliver_feeds() -> None:
    deliver_to_consumers()


@dg.sensor(
    name="feed_consumers_behind",
    job_name="deliver_feeds",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Requests deliver_feeds when a feed consumer is behind its projection's live version or checkpoint.",
)
def feed_consumers_behind(context: dg.SensorEvaluationContext, projectionist: ProjectionistResource) -> dg.SensorResult:
    from warehouse.feeds import current_snapshot, list_consumers
    from warehouse.feeds.changes import live_at

    try:
        with projectionist.lake_connection(read_only=True) as con:
            snapshot = current_snapshot(con)
            behind = []
            for consumer in list_consumers(con):
                live = live_at(con, consumer.source, snapshot)
                if live is not None and (live[0], live[1]) != (consumer.version, consumer.checkpoint):
                    behind.append(f"{consumer.name}@{live[0]}/{live[1]}")
    except LakeNotCreatedError:
        return dg.SensorResult(skip_reason="the lake has not been created yet (nothing ingested)")
    except (ProjectionistError, duckdb.Error, psycopg.Error) as exc:
        return dg.SensorResult(skip_reason=f"reading the lake failed: {exc} (the next tick tries again)")
    if not behind:
        return dg.SensorResult(skip_reason="every feed consumer is up to date")
    key = ",".join(sorted(behind))
    if key == context.cursor:
        return dg.SensorResult(skip_reason="a delivery for these changes was already requested")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"feeds-{key}")], cursor=key)
