"""Upcasting: old event versions read as the latest, chained, vectorized or in Python; stored events unchanged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections import Column, Projection, Registry, Sql, Upcaster, Upcasters, compute, upcast_events
from projections.engine import DATA_ERRORS
from projections.errors import ProjectionDefinitionError
from projections.upcasting import upcast_sql
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


def _defaults_reference(data: str, defaults: dict[str, Any]) -> Any:
    """What ``defaults=`` means, in plain Python: None when the data is not a JSON object."""
    try:
        stored = json.loads(data, parse_float=Decimal)
    except ValueError:
        return None
    if not isinstance(stored, dict):
        return None
    return {**stored, **{k: v for k, v in defaults.items() if stored.get(k) is None}}


def _upcast_rows(con: duckdb.DuckDBPyConnection, upcasters: Upcasters, catch: bool) -> list[tuple[int, Any]]:
    query = upcast_sql(con, "events", upcasters, catch=catch)
    rows = con.sql(f"SELECT event_version, data FROM ({query}) ORDER BY global_position").fetchall()
    return [(v, json.loads(d, parse_float=Decimal) if v == 2 else d) for v, d in rows]


def test_defaults_fill_missing_and_null_fields_and_keep_the_rest(con: duckdb.DuckDBPyConnection) -> None:
    defaults = {"currency": "EUR", "a/b~c": [1, {"x": True}], "rate": Decimal("0.10")}
    stored = [
        '{"price":4.99}',  # lacks every field: they are inserted in front of the text
        '{"price":4.99,"currency":"USD"}',  # a stored value wins
        '{"price":4.99,"currency":null,"note":null}',  # a null reads as the default; other nulls stay
        '  { "price" : 1 }',  # whitespace before the first member: merged instead
        "{}",
        "{ }",
        '{"a/b~c":"kept","rate":1,"currency":"GBP"}',  # nothing to set
    ]
    _load(con, *[("Priced", 1, text) for text in stored])
    upcasters = Upcasters([Upcaster("Priced", 1, defaults=defaults)])
    for catch in (True, False):  # the engine's single pass reads without try(): same result
        assert _upcast_rows(con, upcasters, catch) == [(2, _defaults_reference(text, defaults)) for text in stored]
    # Prices stay exact decimals; the fields are JSON values, not text.
    first = con.sql(f"SELECT data FROM ({upcast_sql(con, 'events', upcasters)}) ORDER BY global_position").fetchone()
    assert first is not None and json.loads(first[0]) == {
        "a/b~c": [1, {"x": True}],
        "currency": "EUR",
        "price": 4.99,
        "rate": 0.10,
    }
    assert '"rate":0.10' in first[0]


def test_defaults_leave_what_is_not_an_object_as_stored(con: duckdb.DuckDBPyConnection) -> None:
    _load(con, ("Priced", 1, '["not", "an object"]'), ("Priced", 1, '"text"'), ("Priced", 1, "{not json"))
    upcasters = Upcasters([Upcaster("Priced", 1, defaults={"currency": "EUR"})])
    assert _upcast_rows(con, upcasters, catch=True) == [(1, '["not", "an object"]'), (1, '"text"'), (1, "{not json")]
    with pytest.raises(DATA_ERRORS, match="Malformed JSON"):
        _upcast_rows(con, upcasters, catch=False)  # the single pass raises, then falls back to the checked pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    members=st.dictionaries(
        st.sampled_from(["currency", "price", "note", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.text(max_size=5)),
        max_size=4,
    ),
    spaced=st.booleans(),
    defaults=st.dictionaries(
        st.sampled_from(["currency", "note", "y"]), st.one_of(st.text(max_size=3), st.integers(0, 9)), min_size=1
    ),
)
def test_defaults_agree_with_their_plain_python_meaning(
    con: duckdb.DuckDBPyConnection, members: dict[str, Any], spaced: bool, defaults: dict[str, Any]
) -> None:
    text = json.dumps(members) if spaced else json.dumps(members, separators=(",", ":"))
    con.execute("DROP TABLE IF EXISTS events")
    _load(con, ("Priced", 1, text))
    upcasters = Upcasters([Upcaster("Priced", 1, defaults=defaults)])
    for catch in (True, False):
        assert _upcast_rows(con, upcasters, catch) == [(2, _defaults_reference(text, defaults))]


def test_bad_defaults_are_refused() -> None:
    with pytest.raises(ProjectionDefinitionError, match="exactly one of"):
        Upcaster("A", 1, sql="data", defaults={"x": 1})
    with pytest.raises(ProjectionDefinitionError, match="non-empty mapping"):
        Upcaster("A", 1, defaults={})
    with pytest.raises(ProjectionDefinitionError, match="holds a null"):
        Upcaster("A", 1, defaults={"x": {"y": None}})
    with pytest.raises(ProjectionDefinitionError, match="not a JSON value"):
        Upcaster("A", 1, defaults={"x": object()})
    with pytest.raises(ProjectionDefinitionError, match="not a JSON value"):
        Upcaster("A", 1, defaults={"x": Decimal("NaN")})


def test_an_upcaster_with_defaults_is_hashable_like_the_others() -> None:
    assert hash(Upcaster("A", 1, defaults={"x": 1})) == hash(Upcaster("A", 1, defaults={"x": 1}))
    assert Upcaster("A", 1, defaults={"x": 1}) != Upcaster("A", 1, defaults={"x": 2})


def test_an_events_relation_that_fails_to_read_is_not_called_missing(
    con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """Before, any error reading it (the lake's catalog restarting under follow) became a terminal
    configuration error, "Attach the lake or create it", and stopped `follow`."""
    from eventstore.errors import ConfigurationError
    from projections.upcasting import events_source

    with pytest.raises(ConfigurationError, match="events relation nowhere cannot be read"):
        events_source(con, "nowhere")
    path = tmp_path / "events.parquet"
    create_raw_events(con, "events")
    con.execute(f"COPY (SELECT * FROM events) TO '{path}' (FORMAT parquet)")
    con.execute(f"CREATE VIEW gone AS SELECT * FROM read_parquet('{path}')")
    path.unlink()  # its file goes away, as the catalog's server does in a restart: the error is the read's
    with pytest.raises(duckdb.IOException):
        events_source(con, "gone")
