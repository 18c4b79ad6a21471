"""Upcasting: old event versions read as the latest, chained, vectorized or in Python; stored events unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pytest

from eventstore.errors import ProjectionDefinitionError
from projections import Column, Projection, Registry, Sql, Upcaster, Upcasters, compute, upcast_events
from tests.projections.rawevents import RawEvent, create_raw_events, insert_raw_events

AT = datetime(2026, 2, 1, tzinfo=UTC)


def _load(con: duckdb.DuckDBPyConnection, *events: tuple[str, int, dict[str, Any] | str]) -> None:
    create_raw_events(con, "events", data_type="VARCHAR")
    insert_raw_events(
        con,
        [RawEvent(i, 10, f"s-{i}", 1, kind, data, AT, version) for i, (kind, version, data) in enumerate(events, 1)],
    )


def _parsed(data: str | None) -> Any:
    try:
        return json.loads(data) if data is not None else None
    except ValueError:
        return data


def _read(con: duckdb.DuckDBPyConnection, upcasters: Upcasters) -> list[tuple[str, int, Any]]:
    rows = upcast_events(con, "events", upcasters).order("global_position")
    return [(t, v, _parsed(d)) for t, v, d in rows.select("event_type, event_version, data").fetchall()]


def test_item_added_v1_is_read_as_v2_in_eur(con: duckdb.DuckDBPyConnection, registry: Registry) -> None:
    item = {"product_id": "SKU-001", "quantity": 2, "unit_price": Decimal("4.99")}
    _load(
        con,
        ("ItemAdded", 1, item),
        ("ItemAdded", 2, {**item, "currency": "USD"}),
        ("CartOpened", 1, {"customer_id": "c"}),
    )
    assert _read(con, registry.upcasters) == [
        ("ItemAdded", 2, {"product_id": "SKU-001", "quantity": 2, "unit_price": 4.99, "currency": "EUR"}),
        ("ItemAdded", 2, {"product_id": "SKU-001", "quantity": 2, "unit_price": 4.99, "currency": "USD"}),
        ("CartOpened", 1, {"customer_id": "c"}),
    ]
    # Stored events are not touched; and the price keeps its exact decimal text through the upcaster.
    assert con.sql("SELECT event_version FROM events ORDER BY global_position").fetchall() == [(1,), (2,), (1,)]
    assert upcast_events(con, "events", registry.upcasters).filter("global_position = 1").select(
        "CAST(data->>'unit_price' AS DECIMAL(18,2))"
    ).fetchone() == (Decimal("4.99"),)


def test_chained_upcasters_reach_the_latest_version_sql_and_python(con: duckdb.DuckDBPyConnection) -> None:
    def split_name(data: dict[str, Any]) -> dict[str, Any]:
        first, _, last = data.pop("name").partition(" ")
        return {**data, "first_name": first, "last_name": last}

    upcasters = Upcasters(
        [
            Upcaster("Registered", 2, function=split_name),
            Upcaster("Registered", 1, sql="""json_object('name', data->>'fullname', 'age', 0)"""),
            Upcaster("Other", 1, sql="json_object('x', 1)"),
        ]
    )
    assert upcasters.latest("Registered") == 3 and upcasters.latest("CartOpened") is None
    _load(
        con,
        ("Registered", 1, {"fullname": "Ada Lovelace"}),
        ("Registered", 2, {"name": "Alan Turing", "age": 41}),
        ("Registered", 3, {"first_name": "Grace", "last_name": "Hopper", "age": 85}),
        ("Registered", 1, "{not json"),
    )
    assert _read(con, upcasters) == [
        ("Registered", 3, {"age": 0, "first_name": "Ada", "last_name": "Lovelace"}),
        ("Registered", 3, {"age": 41, "first_name": "Alan", "last_name": "Turing"}),
        ("Registered", 3, {"first_name": "Grace", "last_name": "Hopper", "age": 85}),
        # Malformed data stays as stored and does not fail the query: a projection reports it as poison.
        ("Registered", 1, "{not json"),
    ]

    projection = Projection(
        name="people",
        version=1,
        description="People.",
        key=("person",),
        consumes=("Registered",),
        requires={"Registered": {"last_name": "VARCHAR", "age": "INTEGER"}},
        columns=(Column("person", "VARCHAR", "Stream."), Column("last_name", "VARCHAR", "Last name.")),
        body=Sql(
            "SELECT stream_id AS person, data->>'last_name' AS last_name, global_position AS last_global_position "
            "FROM events"
        ),
    )
    result = compute(con, projection, "events", upcasters=upcasters, policy="skip")
    assert [r["last_name"] for r in result.rows.to_pylist()] == ["Lovelace", "Turing", "Hopper"]
    assert [(p.global_position, p.reason) for p in result.poison] == [(4, "data is not valid JSON")]


def test_an_event_its_upcaster_cannot_read_stays_as_stored_and_becomes_poison(con: duckdb.DuckDBPyConnection) -> None:
    def explode(data: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no")

    _load(con, ("Thing", 1, {"a": 1}))
    upcasters = Upcasters([Upcaster("Thing", 1, function=explode), Upcaster("Thing", 2, sql="data")])
    assert _read(con, upcasters) == [("Thing", 1, {"a": 1})]  # not upcast: it stays as stored
    projection = Projection(
        name="things",
        version=1,
        description="Things.",
        key=("thing",),
        consumes=("Thing",),
        requires={"Thing": {"b": "VARCHAR"}},
        columns=(Column("thing", "VARCHAR", "Stream."),),
        body=Sql("SELECT stream_id AS thing, max(global_position) AS last_global_position FROM events GROUP BY 1"),
    )
    result = compute(con, projection, "events", upcasters=upcasters, policy="skip")
    assert [p.reason for p in result.poison] == ["Thing v1 lacks field 'b'"]


def test_upcasters_that_do_not_chain_or_repeat_are_refused() -> None:
    with pytest.raises(ProjectionDefinitionError, match=r"do not chain.*\[1, 3\]"):
        Upcasters([Upcaster("A", 1, sql="data"), Upcaster("A", 3, sql="data")])
    with pytest.raises(ProjectionDefinitionError, match=r"two upcasters for A v1: x\.py and y\.py"):
        Upcasters([Upcaster("A", 1, sql="data", source="x.py"), Upcaster("A", 1, sql="data", source="y.py")])
    with pytest.raises(ProjectionDefinitionError, match="exactly one of"):
        Upcaster("A", 1)
    with pytest.raises(ProjectionDefinitionError, match="positive integer"):
        Upcaster("A", 0, sql="data")
