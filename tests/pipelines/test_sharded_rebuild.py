"""A 4-shard rebuild through Dagster's multiprocess executor (each shard in a process of its own, as any
executor would spread them over machines) equals the one-process rebuild, EXCEPT both ways empty."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from eventstore.demo import append_demo_shop
from pipelines.definitions import build_definitions
from projections import discover
from tests.pipelines.conftest import resource_for
from warehouse import versions
from warehouse.ingest import ingest
from warehouse.sources import open_source

pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning", "ignore::dagster.PreviewWarning")

EXCEPT = "SELECT count(*) FROM (SELECT * FROM {} EXCEPT ALL SELECT * FROM {})"


def sharded_job() -> dg.JobDefinition:
    """The job as each run worker process loads it (resources from the environment, as under `dagster dev`)."""
    return build_definitions().resolve_job_def("rebuild_projection_sharded")


@pytest.mark.slow
def test_four_shards_in_four_processes_equal_one_process(
    store_dsn: str, lake_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_size: bool
) -> None:
    shards = 4 if full_size else 2  # a process per step costs a Dagster import each: CI runs two
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn, "PROJECTIONIST_HOME": str(tmp_path)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # what every process of the run reads
    resource = resource_for(store_dsn, lake_env, tmp_path)
    append_demo_shop(store_dsn, events=1_500, writers=2, seed=21)
    registry = discover()
    with resource.lake_connection() as con:
        source = open_source(resource.settings(), store_dsn)
        try:
            ingest(con, source)
        finally:
            source.close()
        versions.rebuild(con, registry, "cart_summary", 2)
        con.execute("CREATE TABLE projections.one_process AS SELECT * FROM projections.cart_summary_v2")
    config = {"ops": {"plan_rebuild_shards": {"config": {"name": "cart_summary", "version": 2, "shards": shards}}}}
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(sharded_job), instance=instance, run_config=config)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        shard_steps = [
            e
            for e in result.all_events
            if (e.step_key or "").startswith("build_rebuild_shard[") and e.event_type_value == "STEP_OUTPUT"
        ]
        assert len({e.step_key for e in shard_steps}) == shards
        assert len({e.pid for e in shard_steps}) == shards  # each shard computed in a process of its own
    with resource.lake_connection() as con:
        one, sharded = "projections.one_process", "projections.cart_summary_v2"
        assert (
            con.execute(f"SELECT count(*) FROM {sharded}").fetchone()
            == con.execute(f"SELECT count(*) FROM {one}").fetchone()
        )
        assert con.execute(EXCEPT.format(sharded, one)).fetchone() == (0,)
        assert con.execute(EXCEPT.format(one, sharded)).fetchone() == (0,)
