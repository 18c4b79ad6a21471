"""The Dagster resource: one attached lake per execution, dropped after a failure, none outside one."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from tests.pipelines.conftest import resource_for


def test_an_execution_shares_one_lake_and_a_failure_drops_it(
    store_dsn: str, lake_env: dict[str, str], tmp_path: Path
) -> None:
    resource = resource_for(store_dsn, lake_env, tmp_path)
    with resource.lake_connection() as first, resource.lake_connection() as second:
        assert first is not second, "outside an execution, each caller gets its own connection"

    resource.setup_for_execution(dg.build_init_resource_context())
    with resource.lake_connection() as shared:
        shared.execute("CREATE TABLE IF NOT EXISTS meta.probe (n INTEGER)")
    with resource.lake_connection(read_only=True) as reader:
        assert reader is shared, "the steps of a run share the attached lake"
    with pytest.raises(duckdb.CatalogException), resource.lake_connection() as failing:
        failing.execute("SELECT * FROM no_such_table")
    with resource.lake_connection() as fresh:
        assert fresh is not shared, "after a failure the next step (or a retry) starts on a new connection"
        assert fresh.execute("SELECT count(*) FROM meta.probe").fetchone() == (0,)
    resource.teardown_after_execution(dg.build_init_resource_context())
    with pytest.raises(duckdb.ConnectionException):
        fresh.execute("SELECT 1")
