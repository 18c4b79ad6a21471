"""``--tenant`` on rebuild, diff, promote and rollback reaches the tenant path, on a native store with tenants."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from eventstore.connection import connect
from eventstore.settings import TenantField
from pipelines.cli import cli
from pipelines.resources import ProjectionistResource, resource_from_env
from tests.warehouse.conftest import append_shop
from tests.warehouse.test_tenants import TAG

MODULE = """
from projections import Column, Projection, Sql

PROJECTION = Projection(
    name="tenant_events",
    version={version},
    description="Events (v1) or streams (v2) per tenant and event type.",
    key=("tenant_id", "event_type"),
    consumes=("CartOpened", "ItemAdded", "CartConfirmed", "CartCancelled"),
    columns=(
        Column("tenant_id", "VARCHAR", "The tenant."),
        Column("event_type", "VARCHAR", "The event type."),
        Column("events", "BIGINT", "How many."),
    ),
    body=Sql(
        "SELECT tenant_id, event_type, {counted} AS events, max(global_position) AS last_global_position "
        "FROM events GROUP BY tenant_id, event_type"
    ),
    stream_keys=Sql("SELECT DISTINCT stream_id, tenant_id, event_type FROM events"),
    per_tenant=True,
)
"""


def test_one_tenant_through_the_cli(store_dsn: str, tmp_path: Path, lake_env: dict[str, str]) -> None:
    folder = tmp_path / "projections"
    folder.mkdir()
    for version, counted in ((1, "count(*)"), (2, "count(DISTINCT stream_id)")):
        (folder / f"tenant_events_v{version}.py").write_text(MODULE.format(version=version, counted=counted))
    append_shop(store_dsn, 300, transactions=2)
    with connect(store_dsn) as conn:
        conn.execute(TAG)
    env = {
        **lake_env,
        "PROJECTIONIST_EVENT_STORE_DSN": store_dsn,
        "PROJECTIONIST_TENANT_FIELD": "tenant_id",
        "PROJECTIONIST_PROJECTIONS": str(folder),
    }

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner(env=env).invoke(cli, ["--home", str(tmp_path), *args])
        return result.exit_code, result.output

    assert run("ingest")[0] == 0
    assert run("project", "tenant_events")[0] == 0  # v2, the highest, built and live
    # Each command hands --tenant to its tenant path (tests/warehouse/test_tenants.py runs the whole flow).
    code, output = run("rebuild", "tenant_events", "--version", "2", "--tenant", "acme")
    assert code == 0 and "tenant_events v2 tenant acme:" in output and "other tenants' rows untouched" in output
    code, output = run("promote", "tenant_events", "1", "--tenant", "acm")
    assert code != 0 and "tenant 'acm' has no events in the lake (did you mean 'acme'?)" in output
    code, output = run("diff", "tenant_events", "--tenant", "cart_summary")
    assert code != 0 and "tenant 'cart_summary' has no events in the lake" in output
    code, output = run("rollback", "tenant_events", "--tenant", "acme")
    assert code != 0 and "tenant 'acme' of tenant_events follows the live v2" in output
    code, output = run("promote", "cart_summary", "1", "--tenant", "acme")
    assert code != 0 and "is not per tenant" in output


def test_the_dagster_resource_reads_the_tenant_field(tmp_path: Path) -> None:
    resource = resource_from_env({"PROJECTIONIST_TENANT_FIELD": "data.tenant", "PROJECTIONIST_HOME": str(tmp_path)})
    assert "tenant_field" in resource.model_dump()
    settings = ProjectionistResource(home=str(tmp_path), tenant_field="data.tenant").settings()
    assert settings.tenant_field == TenantField("data", "tenant")
