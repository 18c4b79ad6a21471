"""No event blocks a projection: whatever PostgreSQL can store ends in a row or a dead letter, in every kind.

One damaged ItemAdded (or one extra event) in a small shop, for each body kind (cart_summary v1 in
SQL, v2 as a fold, daily_revenue in polars), computed as a rebuild does (``compute_into`` with the
``CHECKS`` ladder) and as an incremental update does (``compute`` with keys), with policy ``skip``
(the event is reported with its reason, every other event is projected) and ``stop`` (a one-line
``PoisonEventError`` naming it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import duckdb
import pytest

from eventstore.demo import generate_carts
from projections import CHECKS, DATA_ERRORS, InsertResult, Projection, Registry, compute, compute_into
from projections.errors import PoisonEventError, ProjectionDefinitionError
from projections.upcasting import Upcasters
from tests.projections.rawevents import RawEvent, create_raw_events, insert_raw_events, shop_events

Kind = Literal["sql", "fold", "polars"]
KINDS: dict[Kind, tuple[str, int]] = {
    "sql": ("cart_summary", 1),
    "fold": ("cart_summary", 2),
    "polars": ("daily_revenue", 1),
}
DEEP = 1500  # levels: beyond Python's recursion limit (1000)


@dataclass(frozen=True)
class Case:
    """A damage to the target ItemAdded (SQL over ``events``) and what each kind must make of it.

    ``reason``: the event is poison with a reason containing it (None: it is projected like any
    other). ``reasons`` overrides it per kind.
    """

    damage: str
    reason: str | None
    reasons: dict[Kind, str | None] = dataclasses.field(default_factory=dict)
    # Kinds that do not yet meet the requirement: strict xfail, so a fix shows.
    gaps: dict[Kind, str] = dataclasses.field(default_factory=dict)

    def expected(self, kind: Kind) -> str | None:
        return self.reasons.get(kind, self.reason)


def _price(value: str) -> str:
    """SQL: set the target's unit_price to JSON text ``value``."""
    return f"""SET data = regexp_replace(data, '"unit_price": [^,}}]+', '"unit_price": {value}')"""


def _quantity(value: str) -> str:
    """SQL: set the target's quantity to JSON text ``value``."""
    return f"""SET data = regexp_replace(data, '"quantity": [0-9]+', '"quantity": {value}')"""


def _note(value_sql: str) -> str:
    """SQL: add a member ``note`` to the target's data, its JSON text given by SQL ``value_sql``."""
    return f"""SET data = substr(data, 1, length(data) - 1) || ', "note": ' || {value_sql} || '}}'"""


POLARS_READS_NULL = "polars' JSON functions read a document nested 127 deep as null: the body sees no field"
CASES = {
    "recorded_at_infinity": Case("SET recorded_at = 'infinity'", "recorded_at is infinity"),
    "recorded_at_minus_infinity": Case("SET recorded_at = '-infinity'", "recorded_at is -infinity"),
    "recorded_at_year_20000": Case(
        "SET recorded_at = '20000-01-01 00:00:00+00'", "recorded_at 20000-01-01 00:00:00+00 is out of range"
    ),
    "recorded_at_bc": Case("SET recorded_at = '0044-03-15 (BC)'", "recorded_at 0044-03-15 (BC) 00:00:00+00 is out"),
    "deep_nesting": Case(
        _note(f"repeat('[', {DEEP}) || repeat(']', {DEEP})"),
        None,
        {"fold": "data is nested too deeply for Python (RecursionError)"},
        {"polars": POLARS_READS_NULL},
    ),
    "huge_string": Case(_note("'\"' || repeat('x', 4000000) || '\"'"), None),
    "many_keys": Case(
        _note("""(SELECT '{' || string_agg('"k' || i || '": ' || i, ', ') || '}' FROM range(100000) AS r(i))"""), None
    ),
    "quantity_is_text": Case(
        _quantity('"two"'),
        "ItemAdded field 'quantity' is not BIGINT: JSON VARCHAR",
    ),
    "price_is_object": Case(
        _price('{"amount": 4.99}'),
        "ItemAdded field 'unit_price' is not DECIMAL(18,2): JSON OBJECT",
    ),
    "price_1e400": Case(
        _price("1e400"),
        "ItemAdded field 'unit_price' is not DECIMAL(18,2): 1e400",
    ),
    "price_minus_1e400": Case(
        _price("-1e400"),
        "ItemAdded field 'unit_price' is not DECIMAL(18,2): -1e400",
    ),
    # How PostgreSQL's jsonb stores 1e400: numeric, written out in full.
    "price_400_digits": Case(
        _price("1" + "0" * 400),
        "ItemAdded field 'unit_price' is not DECIMAL(18,2): 1000000000",
    ),
    "quantity_1e30": Case(_quantity("1" + "0" * 30), "ItemAdded field 'quantity' is not BIGINT: JSON DOUBLE"),
    # A positive JSON integer reads as UBIGINT: this one passes for a BIGINT until it is cast.
    "quantity_2_64_minus_1": Case(
        _quantity(str(2**64 - 1)), "ItemAdded field 'quantity' is not BIGINT: 18446744073709551615"
    ),
    "version_99": Case("SET event_version = 99", "ItemAdded v99: no upcaster or projection declares this version"),
    "version_0": Case("SET event_version = 0", "ItemAdded v0: no upcaster or projection declares this version"),
    "version_minus_1": Case("SET event_version = -1", "ItemAdded v-1: no upcaster or projection declares this version"),
}
UNKNOWN_TYPE = "unknown_type"  # not a damage: an event of a type no projection consumes, itself a mess


def _shop() -> tuple[list[RawEvent], RawEvent]:
    """A small shop and its target: an ItemAdded of a confirmed cart with events after it."""
    events = shop_events(list(generate_carts(250, seed=8)))
    streams: dict[str, list[RawEvent]] = {}
    for event in events:
        streams.setdefault(event.stream_id, []).append(event)
    for stream in streams.values():
        stream.sort(key=lambda e: e.stream_version)
        kinds = [e.event_type for e in stream]
        if kinds[-1] == "CartConfirmed" and kinds[1] == "ItemAdded" and len(stream) > 3:
            return events, stream[1]
    raise AssertionError("no confirmed cart with items")


def _load(con: duckdb.DuckDBPyConnection, name: str, events: list[RawEvent]) -> None:
    create_raw_events(con, name, data_type="VARCHAR")
    insert_raw_events(con, events, name)


def _rebuild(
    con: duckdb.DuckDBPyConnection, projection: Projection, upcasters: Upcasters, policy: Literal["skip", "stop"]
) -> tuple[InsertResult, list[dict[str, Any]]]:
    """What ``versions.rebuild`` does for one chunk: each check in a transaction, the next on a data error."""
    columns = ", ".join(f"{c.name} {c.type}" for c in projection.output_columns)
    con.execute(f"CREATE OR REPLACE TABLE out ({columns})")
    for check in CHECKS:
        con.execute("BEGIN")
        try:
            inserted = compute_into(con, projection, "events", "out", upcasters=upcasters, policy=policy, check=check)
        except DATA_ERRORS:
            con.execute("ROLLBACK")
            if check == CHECKS[-1]:
                raise
            continue
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        rows = con.sql(f"SELECT * FROM out ORDER BY {', '.join(projection.key)}").to_arrow_table().to_pylist()
        return inserted, rows
    raise AssertionError("unreachable")


def _params() -> list[Any]:
    params = []
    for case_name, case in [*CASES.items(), (UNKNOWN_TYPE, None)]:
        for kind in KINDS:
            gap = case.gaps.get(kind) if case else None
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            params.append(pytest.param(kind, case_name, marks=marks, id=f"{kind}-{case_name}"))
    return params


@pytest.mark.parametrize(("kind", "case_name"), _params())
def test_every_stored_event_ends_in_a_row_or_a_dead_letter(
    con: duckdb.DuckDBPyConnection, registry: Registry, kind: Kind, case_name: str
) -> None:
    projection = registry.get(*KINDS[kind])
    upcasters = registry.upcasters
    events, target = _shop()
    _load(con, "events", events)
    if case_name == UNKNOWN_TYPE:
        reason = None
        con.execute(
            "INSERT INTO events BY NAME SELECT * REPLACE (global_position + 100000 AS global_position, "
            "stream_version + 1000 AS stream_version, 'LoyaltyPointsGranted' AS event_type, 99 AS event_version, "
            "'{\"points\": 1e400, ' AS data, TIMESTAMPTZ 'infinity' AS recorded_at, "
            "gen_random_uuid()::VARCHAR AS event_id) FROM events WHERE event_id = ?",
            [target.event_id],
        )
    else:
        case = CASES[case_name]
        reason = case.expected(kind)
        con.execute(f"UPDATE events {case.damage} WHERE event_id = ?", [target.event_id])
    # What the rows must be: those of the shop without the event (poison) or with it undamaged.
    _load(con, "expected_events", [e for e in events if e is not target] if reason else events)
    expected = compute(con, projection, "expected_events", upcasters=upcasters).rows.to_pylist()

    skipped, rows = _rebuild(con, projection, upcasters, "skip")
    assert [(p.event_id, p.global_position) for p in skipped.poison] == (
        [(target.event_id, target.global_position)] if reason else []
    )
    assert all(reason in p.reason and "\n" not in p.reason for p in skipped.poison)
    assert rows == expected  # every other event, those after the bad one too, is projected

    keys = compute(con, projection, "expected_events", upcasters=upcasters).rows.select(list(projection.key))
    live = compute(con, projection, "events", keys, upcasters=upcasters, policy="skip")
    assert [p.event_id for p in live.poison] == ([target.event_id] if reason else [])
    assert live.rows.to_pylist() == expected

    if reason is None:
        assert _rebuild(con, projection, upcasters, "stop")[1] == expected
        return
    for stop in (
        lambda: _rebuild(con, projection, upcasters, "stop"),
        lambda: compute(con, projection, "events", keys, upcasters=upcasters, policy="stop"),
    ):
        with pytest.raises(PoisonEventError) as caught:
            stop()
        assert caught.value.event_id == target.event_id and reason in caught.value.reason
        assert "\n" not in str(caught.value)


def test_a_projection_may_declare_the_versions_it_reads_as_stored(
    con: duckdb.DuckDBPyConnection, registry: Registry
) -> None:
    events, target = _shop()
    _load(con, "events", events)
    con.execute("UPDATE events SET event_version = 3 WHERE event_id = ?", [target.event_id])
    projection = registry.get("cart_summary", 1)
    refused = compute(con, projection, "events", upcasters=registry.upcasters, policy="skip")
    assert [(p.event_id, p.reason) for p in refused.poison] == [
        (target.event_id, "ItemAdded v3: no upcaster or projection declares this version")
    ]
    reads_v3 = dataclasses.replace(projection, event_versions={"ItemAdded": 3})
    assert reads_v3.fingerprint != projection.fingerprint
    assert compute(con, reads_v3, "events", upcasters=registry.upcasters).poison == ()
    # Without upcasters, only v1 is known: the shop's ItemAdded v2 become poison unless declared.
    bare = compute(con, projection, "events", upcasters=Upcasters(), policy="skip")
    assert {p.event_version for p in bare.poison} == {2, 3}
    reads_v2 = dataclasses.replace(projection, event_versions={"ItemAdded": 2})
    assert {p.event_id for p in compute(con, reads_v2, "events", upcasters=Upcasters(), policy="skip").poison} == {
        target.event_id
    }


@pytest.mark.parametrize(
    ("versions", "problem"),
    [
        ({"Unknown": 2}, "declares the version of 'Unknown', which it does not consume"),
        ({"ItemAdded": 0}, "version 0 of 'ItemAdded' is invalid"),
        ({"ItemAdded": True}, "version True of 'ItemAdded' is invalid"),
        ({"ItemAdded": "2"}, "version '2' of 'ItemAdded' is invalid"),
    ],
)
def test_declared_versions_are_checked(registry: Registry, versions: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProjectionDefinitionError, match=problem):
        dataclasses.replace(registry.get("cart_summary", 1), event_versions=versions)


def test_the_fingerprint_of_a_projection_declaring_no_version_is_unchanged(registry: Registry) -> None:
    # Lakes store fingerprints: a new optional field must not make every built version look changed.
    projection = registry.get("cart_summary", 2)
    assert dataclasses.replace(projection, event_versions={}).fingerprint == projection.fingerprint


def test_a_fold_row_beyond_its_column_type_is_still_the_projection_s_fault(
    con: duckdb.DuckDBPyConnection, registry: Registry
) -> None:
    # When no event's declared field overflows, the fold's own value does: the precise check finds
    # no poison and the error names the projection, as before.
    events, _ = _shop()
    _load(con, "events", events)
    fold = registry.get("cart_summary", 2)
    assert fold.body.__class__.__name__ == "Fold"
    broken = dataclasses.replace(
        fold,
        body=dataclasses.replace(fold.body, result=lambda cart: {**cart, "item_quantity": 10**30}),  # type: ignore[type-var]
    )
    with pytest.raises(ProjectionDefinitionError, match="returns values of column 'item_quantity'"):
        compute(con, broken, "events", upcasters=registry.upcasters)
