"""The bundled shop projections against independent plain-Python computations over generated shops."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from eventstore.demo import Cart, generate_carts
from projections import Registry, compute
from tests.projections import expected
from tests.projections.rawevents import RawEvent, load_shop
from warehouse.diff import check_expectation, compare, expectation_for


def _positions(rows: list[RawEvent]) -> dict[str, int]:
    return {row.event_id: row.global_position for row in rows}


def _expected(name: str, version: int, carts: list[Cart], rows: list[RawEvent]) -> list[dict[str, Any]]:
    positions = _positions(rows)
    if name == "cart_summary":
        return expected.cart_summary(carts, positions, version)
    if name == "daily_revenue":
        return expected.daily_revenue(carts, positions)
    return expected.product_sales(carts, positions)


def test_every_kind_is_bundled(registry: Registry) -> None:
    assert {p.kind for p in registry} == {"sql", "polars", "fold"}
    assert {(p.name, p.version) for p in registry} >= {
        ("cart_summary", 1),
        ("cart_summary", 2),
        ("daily_revenue", 1),
        ("product_sales", 1),
    }


@pytest.mark.parametrize("seed", [3, 29])
@pytest.mark.parametrize(
    ("name", "version"), [("cart_summary", 1), ("cart_summary", 2), ("daily_revenue", 1), ("product_sales", 1)]
)
def test_projection_equals_plain_python(
    con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int, seed: int
) -> None:
    carts = list(generate_carts(2500, seed))
    rows = load_shop(con, carts)
    result = compute(con, registry.get(name, version), "events")
    assert result.poison == ()
    want = _expected(name, version, carts, rows)
    assert result.rows.to_pylist() == want
    assert len(want) > 10


def test_columns_are_declared_types_and_have_descriptions(
    con: duckdb.DuckDBPyConnection, registry: Registry, shop: list[RawEvent]
) -> None:
    for projection in registry:
        result = compute(con, projection, "events")
        con.register("result", result.rows)
        relation = con.sql("SELECT * FROM result")
        types = dict(zip(relation.columns, map(str, relation.types), strict=True))
        con.unregister("result")
        assert list(types) == [c.name for c in projection.output_columns]
        for column in projection.output_columns:
            assert types[column.name] == str(con.sql(f"SELECT CAST(NULL AS {column.type})").types[0])
            assert column.description
    v2 = registry.get("cart_summary", 2)
    assert v2.columns[-2].name == "currency" and v2.expected_changes


def test_compute_for_keys_gives_exactly_their_rows(
    con: duckdb.DuckDBPyConnection, registry: Registry, shop: list[RawEvent]
) -> None:
    for projection in registry:
        full = compute(con, projection, "events").rows.to_pylist()
        chosen = full[::7] + full[3:5]
        keys = [tuple(row[k] for k in projection.key) for row in chosen]
        keys.append((*keys[0][:-1], "no-such-key"))  # the last key column is text in every bundled projection
        if len(projection.key) == 1:
            keys = [k[0] for k in keys]
        rows = compute(con, projection, "events", keys).rows.to_pylist()
        assert rows == sorted(chosen, key=lambda r: tuple(r[k] for k in projection.key)), projection.label


def test_cart_summary_v2_changes_only_what_it_declares(
    con: duckdb.DuckDBPyConnection, registry: Registry, shop: list[RawEvent]
) -> None:
    v1, v2 = registry.get("cart_summary", 1), registry.get("cart_summary", 2)
    con.register("old_rows", compute(con, v1, "events").rows)
    con.register("new_rows", compute(con, v2, "events").rows)
    comparison = compare(con, "old_rows", "new_rows", list(v2.key))
    assert check_expectation(con, comparison, expectation_for(registry, "cart_summary", comparison, 2)).satisfied
    changed = con.sql(
        "SELECT count(*) FILTER (WHERE o.total_amount <> n.total_amount), "
        "count(*) FILTER (WHERE n.status = 'cancelled') "
        "FROM old_rows o JOIN new_rows n USING (cart_id)"
    ).fetchone()
    assert changed is not None and changed[0] > 0 and changed[0] <= changed[1]
    # A wrong v2 (a confirmed cart's total changed) is caught by the declared predicate.
    con.execute(
        "CREATE TABLE broken AS SELECT * REPLACE (CASE WHEN status = 'confirmed' AND "
        "row_number() OVER (ORDER BY cart_id) <= 3 THEN total_amount + 1 ELSE total_amount END AS total_amount) "
        "FROM new_rows"
    )
    broken = compare(con, "old_rows", "broken", list(v2.key))
    result = check_expectation(con, broken, expectation_for(registry, "cart_summary", broken, 2))
    assert not result.satisfied
    assert 1 <= result.violating_rows <= 3
    assert result.violations_by_column == {"total_amount": result.violating_rows}  # the declared column, broken
