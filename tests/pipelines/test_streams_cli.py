"""``projectionist streams`` and the stream-health settings on real PostgreSQL and DuckLake."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from benchmarks._lake_data import bulk_append
from eventstore.connection import connect
from eventstore.errors import ConfigurationError
from eventstore.native_store import NewEvent, append
from eventstore.settings import Settings, parse_closing_events
from pipelines.checks import streams_are_short_lived
from pipelines.cli import cli
from pipelines.resources import ProjectionistResource
from projections import discover
from tests.pipelines.conftest import resource_for
from warehouse.stream_health import closing_event_types


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_closing_event_types_come_from_the_projections_or_the_settings(tmp_path: Path) -> None:
    assert closing_event_types(discover()) == {"cart": frozenset({"CartConfirmed", "CartCancelled"})}
    assert closing_event_types(Settings(home=tmp_path)) == closing_event_types(discover())
    configured = Settings.from_env({"PROJECTIONIST_CLOSING_EVENT_TYPES": "order:OrderShipped; *:Closed,Deleted"})
    assert closing_event_types(configured) == {"order": {"OrderShipped"}, "*": {"Closed", "Deleted"}}
    for bad in ("cart", "cart:", ":Closed"):
        with pytest.raises(ConfigurationError, match="PROJECTIONIST_CLOSING_EVENT_TYPES part"):
            parse_closing_events(bad)
    with pytest.raises(ConfigurationError, match="PROJECTIONIST_LONG_STREAM_DAYS='soon' is not a positive number"):
        Settings.from_env({"PROJECTIONIST_LONG_STREAM_DAYS": "soon"})


def test_streams_lists_the_longest_and_the_finished_streams(
    store_dsn: str, tmp_path: Path, lake_env: dict[str, str]
) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn, "PROJECTIONIST_LONG_STREAM_DAYS": "10"}
    bulk_append(store_dsn, 100, transactions=1)  # 20 carts of 5 events, each confirmed or cancelled
    started = datetime(2025, 1, 1, tzinfo=UTC)
    with connect(store_dsn) as conn:  # an open cart that lived 40 days, and a long one
        append(
            conn,
            "cart-lingering",
            "cart",
            [
                NewEvent("CartOpened", {"customer_id": "c1"}, recorded_at=started),
                NewEvent(
                    "ItemAdded",
                    {"product_id": "p", "quantity": 1, "unit_price": 1.0},
                    event_version=2,
                    recorded_at=started + timedelta(days=40),
                ),
            ],
        )
        append(
            conn,
            "cart-long",
            "cart",
            [NewEvent("CartOpened", {"customer_id": "c2"})]
            + [
                NewEvent("ItemAdded", {"product_id": "p", "quantity": 1, "unit_price": 1.0}, event_version=2)
                for _ in range(7)
            ]
            + [NewEvent("CartConfirmed", {})],
        )
    code, output = run("ingest", "--long-stream-threshold", "8", home=tmp_path, env=env)
    assert code == 0, output
    code, output = run("streams", "--limit", "2", home=tmp_path, env=env)
    assert code == 0, output
    assert "22 streams: 1 long (analytics.stream_stats.is_long), 1 lived longer than 10 days" in output, output
    longest = output.split("longest streams")[1].split("archiving candidates")[0]
    assert longest.splitlines()[3].startswith("cart-long ") and "| CartConfirmed" in longest, output
    assert "archiving candidates: 21 finished streams (last event closes them: cart: CartCancelled, CartConfirmed)" in (
        output
    )
    assert "cart-lingering" not in output.split("archiving candidates")[1], "an open cart is no candidate"

    code, output = run("streams", "--json", home=tmp_path, env=env)
    report = json.loads(output)
    assert (report["streams"], report["long"], report["long_lived"], report["finished"]) == (22, 1, 1, 21)
    assert report["longest"][0]["stream_id"] == "cart-long" and report["longest"][0]["events"] == 9
    assert "cart-lingering" not in {r["stream_id"] for r in report["candidates"]}
    assert report["closing_events"] == {"cart": ["CartCancelled", "CartConfirmed"]}

    # Configured closing types win over the projections'; nothing configured at all means no candidates.
    code, output = run(
        "streams", "--json", home=tmp_path, env={**env, "PROJECTIONIST_CLOSING_EVENT_TYPES": "cart:ItemAdded"}
    )
    assert json.loads(output)["finished"] == 1 and json.loads(output)["candidates"][0]["stream_id"] == "cart-lingering"
    code, output = run("streams", "--limit", "0", home=tmp_path, env=env)
    assert code == 2 and "--limit 0 must be at least 1" in output
    code, output = run("streams", home=tmp_path, env={**env, "PROJECTIONIST_CLOSING_EVENT_TYPES": "cart"})
    assert code == 2 and "PROJECTIONIST_CLOSING_EVENT_TYPES part 'cart' is not STREAM_TYPE:EventType" in output

    # The asset check warns (never fails the run) and names the long-lived stream.
    fields = resource_for(store_dsn, lake_env, tmp_path).model_dump()
    result = streams_are_short_lived(projectionist=ProjectionistResource(**{**fields, "long_stream_days": "10"}))
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.description == "1 stream(s) lived longer than 10 days; longest: cart-lingering"
    assert streams_are_short_lived(projectionist=ProjectionistResource(**{**fields, "long_stream_days": "50"})).passed
