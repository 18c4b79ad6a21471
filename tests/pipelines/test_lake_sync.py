"""The lake observer: what the CLI did outside Dagster reaches the instance once; Dagster runs are not doubled."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from click.testing import CliRunner

from eventstore.demo import append_demo_shop
from pipelines.cli import cli
from pipelines.definitions import build_definitions
from pipelines.lake_sync import OUTSIDE_DAGSTER
from pipelines.resources import ProjectionistResource
from tests.pipelines.conftest import resource_for

DEFS = build_definitions()


def _observe(instance: dg.DagsterInstance, resource: ProjectionistResource) -> list[dg.AssetMaterialization]:
    """One tick of the sensor; its events are stored as the daemon stores them."""
    sensor = DEFS.resolve_sensor_def("lake_observer")
    with dg.build_sensor_context(instance=instance, resources={"projectionist": resource}) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    events = [e for e in (result.asset_events or []) if isinstance(e, dg.AssetMaterialization)]
    for event in events:
        instance.report_runless_asset_event(event)
    return events


def _keys(events: list[dg.AssetMaterialization]) -> set[str]:
    return {e.asset_key.to_user_string() for e in events}


def test_cli_work_is_reported_once_and_dagster_runs_are_not_doubled(
    store_dsn: str, lake_env: dict[str, str], tmp_path: Path
) -> None:
    env = {"PROJECTIONIST_HOME": str(tmp_path / "home"), "PROJECTIONIST_EVENT_STORE_DSN": store_dsn, **lake_env}
    resource = resource_for(store_dsn, lake_env, tmp_path / "home")
    runner = CliRunner()

    def run(*args: str) -> None:
        done = runner.invoke(cli, list(args), env=env)
        assert done.exit_code == 0, done.output

    with dg.instance_for_test() as instance:
        assert _observe(instance, resource) == [], "a lake never ingested into has nothing to show"

        append_demo_shop(store_dsn, events=500, writers=2, seed=9)
        run("ingest")
        run("project")
        first = _observe(instance, resource)
        assert _keys(first) == {
            "raw/events",
            "analytics/stream_stats",
            "analytics/event_volume_daily",
            "projections/cart_summary/v2",
            "analytics/cart_summary",
            "projections/daily_revenue/v1",
            "analytics/daily_revenue",
            "projections/product_sales/v1",
            "analytics/product_sales",
        }
        assert all(e.description == OUTSIDE_DAGSTER for e in first)
        built = next(e for e in first if e.asset_key == dg.AssetKey(["projections", "cart_summary", "v2"]))
        assert built.metadata["state"].value == "live" and built.metadata["rows"].value > 0
        assert _observe(instance, resource) == [], "reported once"

        # A Dagster run of the same state records the same metadata: the observer adds nothing.
        job = DEFS.resolve_job_def("ingest_and_project")
        assert job.execute_in_process(instance=instance, resources={"projectionist": resource}).success
        assert _observe(instance, resource) == [], "the run recorded what it did (v1 built beside v2)"

        run("rebuild", "cart_summary", "--version", "1")
        run("diff", "cart_summary", "2", "1")
        run("promote", "cart_summary", "1")
        promoted = _observe(instance, resource)
        assert {"projections/cart_summary/v1", "projections/cart_summary/v2", "analytics/cart_summary"} <= _keys(
            promoted
        )
        live = next(e for e in promoted if e.asset_key == dg.AssetKey(["analytics", "cart_summary"]))
        assert live.metadata["live_version"].value == 1

        run("rollback", "cart_summary")
        back = _observe(instance, resource)
        live = next(e for e in back if e.asset_key == dg.AssetKey(["analytics", "cart_summary"]))
        assert live.metadata["live_version"].value == 2
        assert _observe(instance, resource) == []
