"""The Dagster definitions: loadable, a reviewed snapshot of the graph, the sensor, in-process runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.positions import START
from pipelines.definitions import build_definitions, defs
from tests.pipelines.conftest import resource_for

SNAPSHOT = Path(__file__).with_name("asset_graph.json")


def graph_of(definitions: dg.Definitions) -> dict[str, Any]:
    """Keys, deps, checks and jobs: what a reviewer should see change."""
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(p.to_user_string() for p in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "checks": sorted(c.name for c in node.check_keys),
        }
    repo = definitions.get_repository_def()
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "schedules": sorted(s.name for s in repo.schedule_defs),
        "sensors": sorted(s.name for s in repo.sensor_defs),
    }


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs)


def test_asset_graph_matches_the_reviewed_snapshot() -> None:
    current = graph_of(defs)
    if os.environ.get("UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert current == json.loads(SNAPSHOT.read_text()), (
        "the asset graph changed: review it and rerun with UPDATE_SNAPSHOT=1 to accept"
    )


def test_sensor_requests_a_run_only_when_the_head_moved(
    store_dsn: str, lake_env: dict[str, str], tmp_path: Path
) -> None:
    resource = resource_for(store_dsn, lake_env, tmp_path)
    sensor = defs.resolve_sensor_def("event_store_head")
    with dg.build_sensor_context(resources={"projectionist": resource}) as context:
        first = sensor(context)
    assert isinstance(first, dg.SensorResult)
    assert len(first.run_requests or []) == 1, "an empty store's head is new to a fresh cursor"
    cursor = first.cursor
    with dg.build_sensor_context(cursor=cursor, resources={"projectionist": resource}) as context:
        second = sensor(context)
    assert not second.run_requests and second.skip_reason is not None
    append_demo_shop(store_dsn, events=200, writers=2, seed=5)
    with dg.build_sensor_context(cursor=cursor, resources={"projectionist": resource}) as context:
        third = sensor(context)
    assert len(third.run_requests or []) == 1
    assert third.cursor != cursor


def test_ingest_and_project_in_process(store_dsn: str, lake_env: dict[str, str], tmp_path: Path) -> None:
    append_demo_shop(store_dsn, events=1500, writers=3, seed=11)
    definitions = build_definitions()
    resource = resource_for(store_dsn, lake_env, tmp_path)
    job = definitions.resolve_job_def("ingest_and_project")
    result = job.execute_in_process(resources={"projectionist": resource}, raise_on_error=True)
    assert result.success
    raw = result.asset_materializations_for_node("raw__events")[0].metadata
    with connect(store_dsn) as conn:
        stored = conn.execute("SELECT count(*) FROM events").fetchone()
    assert stored is not None and raw["events"].value == stored[0]
    built = {
        tuple(m.asset_key.path): m.metadata
        for node in ("projections__cart_summary__v1", "projections__cart_summary__v2")
        for m in result.asset_materializations_for_node(node)
    }
    assert built[("projections", "cart_summary", "v1")]["rows"].value > 0
    # The position range each materialization covered: a first build covers everything ingested.
    assert built[("projections", "cart_summary", "v1")]["from_position"].value == str(START)
    assert built[("projections", "cart_summary", "v1")]["to_position"].value == raw["to_position"].value
    with resource.lake_connection(read_only=True) as con:
        carts = con.execute("SELECT count(DISTINCT stream_id) FROM raw.all_events").fetchone()
        rows = con.execute("SELECT count(*) FROM projections.cart_summary_v1").fetchone()
    assert carts == rows
    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks[("v1", "lag_within_bound")]
    assert checks[("v1", "no_new_dead_letters")]
    assert checks[("events", "no_unhandled_event_types")]


def test_rebuild_of_an_unknown_projection_fails_before_writing(
    store_dsn: str, lake_env: dict[str, str], tmp_path: Path
) -> None:
    resource = resource_for(store_dsn, lake_env, tmp_path)
    job = defs.resolve_job_def("rebuild_projection")
    config = {"ops": {"rebuild_version": {"config": {"name": "cart_sumary", "version": 1}}}}
    result = job.execute_in_process(run_config=config, resources={"projectionist": resource}, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("rebuild_version")
    assert failure is not None and "cart_sumary" in str(failure.error)
    with resource.lake_connection() as con:
        tables = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND schema_name = 'projections'"
        ).fetchone()
    assert tables == (0,), "nothing may be written for a refused target"
