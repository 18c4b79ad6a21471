"""Public events: a contract v2 built beside v1, compared with diff, promoted, its consumers moved; the field rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from eventstore.demo import append_demo_shop
from projections import Column, Registry, Sql, discover
from projections.errors import ProjectionDefinitionError
from projections.public_events import PublicEvent
from warehouse.diff import compare_versions
from warehouse.feeds import Consumer, FeedError, add_consumer, deliver, publish
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.privacy import private_leaks
from warehouse.sources import StoreSource
from warehouse.versions import promote, rebuild

EXAMPLES = Path(__file__).resolve().parents[2] / "projections" / "examples"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return discover(EXAMPLES)


def test_the_field_rule_refuses_a_public_event_that_carries_a_private_field(registry: Registry) -> None:
    v1 = registry.get("cart_checked_out", 1)
    assert isinstance(v1, PublicEvent)
    reads_email = dataclasses.replace(v1, requires={**v1.requires, "CartOpened": {"email": "VARCHAR"}})
    with pytest.raises(ProjectionDefinitionError, match=r"reads CartOpened v1\.email, a private field"):
        reads_email.check_fields(registry.fields)
    private_column = dataclasses.replace(v1, columns=(*v1.columns[:-1], Column("x", "VARCHAR", "x", public=False)))
    with pytest.raises(ProjectionDefinitionError, match="column x is declared public=False"):
        private_column.check_fields(registry.fields)
    undeclared = dataclasses.replace(v1, consumes=(*v1.consumes, "PaymentRequested"))
    with pytest.raises(ProjectionDefinitionError, match="consumes PaymentRequested, whose public fields are not"):
        undeclared.check_fields(registry.fields)


def test_contract_v2_beside_v1_diffed_promoted_and_consumers_moved(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, tmp_path: Path, registry: Registry
) -> None:
    append_demo_shop(store_dsn, events=600, writers=2, seed=3, hold_seconds=0)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_checked_out", 1)
    promote(con, registry, "cart_checked_out", 1)
    add_consumer(con, Consumer("partner", "parquet", "cart_checked_out", str(tmp_path / "drops")))
    [first] = deliver(con, registry)
    confirmed = con.execute("SELECT count(*) FROM public.cart_checked_out_v1").fetchone()
    assert confirmed and first.counts["insert"] == confirmed[0] > 0
    assert private_leaks(con, registry, schemas=("public",)) == []

    rebuild(con, registry, "cart_checked_out", 2)
    comparison, _ = compare_versions(con, registry, "cart_checked_out", 1, 2)
    assert [c.name for c in comparison.schema.added] == ["amount", "currency"]
    promote(con, registry, "cart_checked_out", 2)
    [switch] = deliver(con, registry)
    assert switch.changes == comparison.counts()["changed"]  # the shared columns are the same: nothing re-sent
    assert con.execute("SELECT count(*) FROM public.cart_checked_out_v2").fetchone() == confirmed
    manifests = sorted((tmp_path / "drops" / "partner").glob("*.manifest.json"))
    assert json.loads(manifests[-1].read_text())["version"] == 2, "the consumer moved to v2"

    # A body that copies a private field (not declared in `requires`) is caught in the data: no view, no delivery.
    leaky = dataclasses.replace(
        registry.get("cart_checked_out", 2),
        version=3,
        columns=(*registry.get("cart_checked_out", 2).columns, Column("contact", "VARCHAR", "oops")),
        body=Sql(
            str(registry.get("cart_checked_out", 2).body.query).replace(  # type: ignore[union-attr]
                "AS customer_id,",
                "AS customer_id, arg_min(data->>'email', stream_version) FILTER (WHERE event_type = 'CartOpened') "
                "AS contact,",
            )
        ),
    )
    with_leak = Registry({**{(p.name, p.version): p for p in registry}, ("cart_checked_out", 3): leaky},
                         registry.upcasters, fields=registry.fields)  # fmt: skip
    rebuild(con, with_leak, "cart_checked_out", 3)
    with pytest.raises(FeedError, match=r"public\.cart_checked_out_v3\.contact holds .* CartOpened v1\.email"):
        publish(con, with_leak)
    views = con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'public'").fetchall()
    assert ("cart_checked_out_v3",) not in views
    with pytest.raises(FeedError, match="not published"):
        deliver(con, with_leak)
    con.close()
