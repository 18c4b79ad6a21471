"""Every job of pipelines/definitions.py, run through Dagster twice in a row in each ordinary state.

A schedule fires whether or not there is work: an idle store, a version that is already up to
date, a retired version after a rollback and two runs at once must all give green runs that
record what they did (zero events included), while the store and the lake stay equal.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from pipelines.definitions import build_definitions
from pipelines.resources import ProjectionistResource
from projections import discover
from tests.pipelines.conftest import resource_for
from tests.pipelines.lakecheck import assert_versions_equal_fresh_computation
from warehouse import versions

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning", "ignore::dagster.PreviewWarning")

DEFS = build_definitions()
VERSION_NODES = {f"projections__{p.name}__v{p.version}": (p.name, p.version) for p in discover()}


def _run(job: str, resource: ProjectionistResource, config: dict[str, Any] | None = None) -> dg.ExecuteInProcessResult:
    definition = DEFS.resolve_job_def(job) if job != "__ASSET_JOB" else DEFS.resolve_implicit_global_asset_job_def()
    result = definition.execute_in_process(
        run_config=config or {}, resources={"projectionist": resource}, raise_on_error=False
    )
    failures = [e.message for e in result.all_events if e.is_failure]
    assert result.success, f"{job} failed: {failures}"
    return result


def _materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """Node name → its materialization's metadata values."""
    return {
        node: {k: v.value for k, v in m.metadata.items()}
        for node in [*VERSION_NODES, "raw__events"]
        for m in result.asset_materializations_for_node(node)
    }


def _checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}


def _stored(store_dsn: str) -> int:
    with connect(store_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def _ingest_twice(resource: ProjectionistResource, store_dsn: str) -> dict[str, dict[str, Any]]:
    """Run ingest_and_project twice: the first ingests what the store has new, the second has nothing to do."""
    expect_new = _stored(store_dsn) - _lake_events(resource)
    first = _run("ingest_and_project", resource)
    done = _materialized(first)
    assert done["raw__events"]["events"] == expect_new
    assert done["raw__events"]["lag_events"] == 0
    failed_checks = [k for k, passed in _checks(first).items() if not passed and k[1] != "matches_live"]
    assert not failed_checks, failed_checks
    second = _run("ingest_and_project", resource)
    again = _materialized(second)
    assert again["raw__events"]["events"] == 0, "nothing is new the second time"
    assert again["raw__events"]["to_position"] == done["raw__events"]["to_position"]
    for node in VERSION_NODES:
        assert again[node]["events_applied"] == 0, f"{node} had nothing to do the second time"
        assert again[node]["keys_recomputed"] == 0
        assert again[node]["rows"] == done[node]["rows"]
        assert again[node]["checkpoint"] == done[node]["checkpoint"]
        if again[node]["state"] in ("live", "ready"):  # a retired version stays behind on purpose
            assert again[node]["lag_events"] == 0
    assert not [k for k, passed in _checks(second).items() if not passed and k[1] != "matches_live"]
    with_lake = _lake_events(resource)
    assert with_lake == _stored(store_dsn), "the lake holds every event of the store, once"
    return done


def _lake_events(resource: ProjectionistResource) -> int:
    with resource.lake_connection() as con:
        try:
            row = con.execute("SELECT count(*), count(DISTINCT event_id) FROM raw.all_events").fetchone()
        except duckdb.CatalogException:  # a new lake, before its first ingest
            return 0
    assert row is not None and row[0] == row[1], "no event twice in the lake"
    return int(row[0])


def _states(resource: ProjectionistResource) -> dict[int, str]:
    with resource.lake_connection(read_only=True) as con:
        return {v.version: v.state for v in versions.list_versions(con, "cart_summary")}


def test_every_job_is_green_twice_in_every_ordinary_state(
    store_dsn: str, lake_env: dict[str, str], tmp_path: Path
) -> None:
    resource = resource_for(store_dsn, lake_env, tmp_path)

    # An empty store and a new lake: nothing to ingest, every version built empty, the newest live.
    empty = _ingest_twice(resource, store_dsn)
    assert all(empty[node]["rows"] == 0 for node in VERSION_NODES)
    assert _states(resource) == {1: "ready", 2: "live"}

    # New events, then nothing new.
    append_demo_shop(store_dsn, events=600, writers=2, seed=3)
    fed = _ingest_twice(resource, store_dsn)
    assert fed["projections__cart_summary__v1"]["events_applied"] > 0

    # A rebuild (twice: the second replaces the first's table); the jobs after it run in that state.
    rebuild = {"ops": {"rebuild_version": {"config": {"name": "cart_summary", "version": 1}}}}
    for _ in range(2):
        result = _run("rebuild_projection", resource, rebuild)
        (built,) = result.asset_materializations_for_node("rebuild_version")
        assert built.metadata["rows"].value == fed["projections__cart_summary__v1"]["rows"]

    # The same rebuild in 3 shards: the same table, swapped in once.
    with resource.lake_connection() as con:
        one_process = con.execute("SELECT * FROM projections.cart_summary_v1 ORDER BY ALL").fetchall()
    sharded = {"ops": {"plan_rebuild_shards": {"config": {"name": "cart_summary", "version": 1, "shards": 3}}}}
    result = _run("rebuild_projection_sharded", resource, sharded)
    (built,) = result.asset_materializations_for_node("finish_rebuild_shards")
    assert built.metadata["shards"].value == 3 and built.metadata["rows"].value == len(one_process)
    with resource.lake_connection() as con:
        assert con.execute("SELECT * FROM projections.cart_summary_v1 ORDER BY ALL").fetchall() == one_process

    # Compare, then promote v1 over v2 (twice: the second finds it live and succeeds doing nothing).
    compare = {"ops": {"compare_two_versions": {"config": {"name": "cart_summary", "a": 2, "b": 1}}}}
    for _ in range(2):
        _run("compare_versions", resource, compare)
    promote = {"ops": {"promote_version": {"config": {"name": "cart_summary", "version": 1}}}}
    first, second = (_run("promote_projection", resource, promote) for _ in range(2))
    (swapped,) = first.asset_materializations_for_node("promote_version")
    assert swapped.asset_key == dg.AssetKey(["analytics", "cart_summary"])
    assert swapped.metadata["live_version"].value == 1
    assert not second.asset_materializations_for_node("promote_version"), "the second promote changes nothing"
    assert _states(resource) == {1: "live", 2: "retired"}

    # New events with a retired version: it records that it does not advance; its lag check passes.
    append_demo_shop(store_dsn, events=300, writers=2, seed=4)
    after_promote = _ingest_twice(resource, store_dsn)
    assert after_promote["projections__cart_summary__v2"]["events_applied"] == 0
    assert after_promote["projections__cart_summary__v2"]["state"] == "retired"

    # Roll back (as an operator would, from the CLI's function): v2 live again and brought current.
    with resource.lake_connection() as con:
        versions.rollback(con, "cart_summary", registry=discover())
    assert _states(resource) == {1: "retired", 2: "live"}
    append_demo_shop(store_dsn, events=200, writers=2, seed=5)
    _ingest_twice(resource, store_dsn)

    # "Materialize all" (every asset and check), twice.
    for _ in range(2):
        everything = _run("__ASSET_JOB", resource)
        live = everything.asset_materializations_for_node("analytics__cart_summary")
        assert live and live[0].metadata["live_version"].value == 2

    # Two runs at once: both green (a clean skip where the other came first); nothing lost or doubled.
    append_demo_shop(store_dsn, events=400, writers=2, seed=6)
    outcomes: list[bool] = []

    def launch() -> None:
        job = DEFS.resolve_job_def("ingest_and_project")
        run = job.execute_in_process(resources={"projectionist": resource}, raise_on_error=False)
        outcomes.append(run.success)

    threads = [threading.Thread(target=launch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert outcomes == [True, True]
    assert _lake_events(resource) == _stored(store_dsn)
    _run("ingest_and_project", resource)  # whatever the two left to do (one may have read before the other)
    with resource.lake_connection(read_only=True) as con:
        assert assert_versions_equal_fresh_computation(con) == len(VERSION_NODES) - 1  # all but retired v1
