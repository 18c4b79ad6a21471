"""Analytics views over the lake: typed per event type and version, stream stats, daily volume, comments."""

from __future__ import annotations

from decimal import Decimal

import duckdb

from eventstore.connection import connect
from eventstore.native_store import NewEvent, append
from projections import discover
from tests.warehouse.conftest import append_shop
from warehouse.analytics import refresh_analytics
from warehouse.archive import archive_lake
from warehouse.ingest import ingest, table_files
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource


def rows(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple[object, ...]]:
    return con.execute(query).fetchall()


def test_views_type_payloads_per_version_and_document_everything(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    appended = append_shop(store_dsn, 1_000)
    con = open_lake(lake_config)
    ingest(con, source)
    written = refresh_analytics(con, long_stream_threshold=4)
    assert {"analytics.events_item_added_v1", "analytics.events_item_added_v2", "analytics.events_item_added"} <= set(
        written
    )
    types = dict(
        rows(con, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_item_added_v2'")
    )
    assert types["quantity"] == "BIGINT" and types["unit_price"] == "DOUBLE" and types["currency"] == "VARCHAR"
    assert "currency" not in dict(
        rows(con, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_item_added_v1'")
    )
    # Typed columns hold the payload's values, and the unversioned view unions every version.
    assert rows(
        con,
        "SELECT count(*) FROM analytics.events_item_added a JOIN raw.events r USING (global_position) "
        "WHERE a.quantity = (r.data->>'quantity')::BIGINT AND a.product_id = (r.data->>'product_id')",
    ) == rows(con, "SELECT count(*) FROM raw.events WHERE event_type = 'ItemAdded'")
    assert rows(con, "SELECT count(*) FROM analytics.events_item_added WHERE currency IS NULL") == rows(
        con, "SELECT count(*) FROM raw.events WHERE event_type = 'ItemAdded' AND event_version = 1"
    )
    # Streams: 5 events each in this shop, so all are longer than a threshold of 4.
    assert rows(con, "SELECT sum(events), bool_and(is_long), min(events) FROM analytics.stream_stats") == [
        (appended, True, 5)
    ]
    assert rows(con, "SELECT sum(events) FROM analytics.event_volume_daily") == [(appended,)]
    # Every table and view has a comment; table columns through COMMENT ON, view columns in meta.
    assert rows(con, "SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND comment IS NULL") == [(0,)]
    assert rows(
        con, "SELECT count(*) FROM duckdb_views() WHERE database_name = 'lake' AND NOT internal AND comment IS NULL"
    ) == [(0,)]
    assert rows(
        con,
        "SELECT count(*) FROM duckdb_columns() c JOIN duckdb_tables() t USING (database_name, schema_name, table_name) "
        "WHERE database_name = 'lake' AND c.comment IS NULL",
    ) == [(0,)]
    undocumented = rows(
        con,
        "SELECT c.schema_name, c.table_name, c.column_name FROM duckdb_columns() c JOIN duckdb_views() v "
        "ON v.database_name = c.database_name AND v.schema_name = c.schema_name AND v.view_name = c.table_name "
        "LEFT JOIN meta.column_comments m ON m.schema_name = c.schema_name AND m.view_name = c.table_name "
        "AND m.column_name = c.column_name WHERE c.database_name = 'lake' AND m.comment IS NULL",
    )
    assert undocumented == []
    # The comments are a few rows per view, written in groups DuckLake keeps in its catalog: no Parquet file each.
    assert table_files(con).get("meta.column_comments", (0, 0))[0] == 0


def test_refresh_is_a_no_op_until_types_or_threshold_change(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    assert refresh_analytics(con)
    assert refresh_analytics(con) == []
    assert refresh_analytics(con, long_stream_threshold=3) == ["analytics.stream_stats", "analytics.event_volume_daily"]
    assert rows(con, "SELECT bool_and(is_long) FROM analytics.stream_stats") == [(True,)]


def test_a_version_found_only_in_the_cold_tier_is_typed_from_it(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    # The views sample a version from raw.events alone when the cold tier holds none of it: a version there
    # must still be sampled from archive.events.
    append_shop(store_dsn, 500)
    con = open_lake(lake_config)
    ingest(con, source)
    assert archive_lake(con, "0s", closing={"cart": ("CartConfirmed", "CartCancelled")}).streams > 0
    assert rows(con, "SELECT count(*) FROM raw.events WHERE event_type = 'CartCancelled'") == [(0,)]
    cancelled = rows(con, "SELECT count(*) FROM archive.events WHERE event_type = 'CartCancelled'")
    assert cancelled[0][0] > 0
    refresh_analytics(con)
    types = dict(
        rows(con, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_cart_cancelled_v1'")
    )
    assert types.get("reason") == "VARCHAR"
    assert rows(con, "SELECT count(reason) FROM analytics.events_cart_cancelled_v1") == cancelled
    # A version in both tiers is typed too (ItemAdded v2: in confirmed carts, cold, and in open ones, hot).
    assert "currency" in dict(
        rows(con, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_item_added_v2'")
    )


_TYPES = "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_item_added_v1'"


def test_declared_types_are_exact_and_a_value_that_does_not_fit_is_null_with_a_flag(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str
) -> None:
    with connect(store_dsn) as conn:
        append(
            conn,
            "cart-exact",
            "cart",
            [
                NewEvent("ItemAdded", {"product_id": "p1", "quantity": 2, "unit_price": 324000.0}),
                NewEvent("ItemAdded", {"product_id": "p2", "quantity": 1, "unit_price": 0.1}),
                NewEvent("ItemAdded", {"product_id": "p3", "quantity": 1, "unit_price": 1.005}),  # 3 decimals
                NewEvent("ItemAdded", {"product_id": "p4", "quantity": 2.5, "unit_price": 1e3}),  # not a count
            ],
        )
    con = open_lake(lake_config)
    ingest(con, source)
    refresh_analytics(con)  # without declarations: inferred, money as DOUBLE
    types = dict(
        rows(con, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_item_added_v1'")
    )
    assert types["unit_price"] == "DOUBLE"
    declared = discover().declared_fields()
    assert declared["ItemAdded"]["unit_price"] == "DECIMAL(18,2)" and declared["ItemAdded"]["quantity"] == "BIGINT"
    written = refresh_analytics(con, declared=declared)  # the declarations changed: the view is rebuilt
    assert "analytics.events_item_added_v1" in written and refresh_analytics(con, declared=declared) == []
    assert refresh_analytics(con, declared=None) == [], "unknown declarations (a broken module) keep the views"
    types = dict(
        rows(con, "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'events_item_added_v1'")
    )
    assert types["unit_price"] == "DECIMAL(18,2)" and types["quantity"] == "BIGINT"
    assert types["unit_price_unfit"] == "BOOLEAN" and "product_id_unfit" not in types  # VARCHAR always fits
    got = rows(
        con,
        "SELECT product_id, unit_price, unit_price_unfit, quantity, quantity_unfit "
        "FROM analytics.events_item_added_v1 ORDER BY product_id",
    )
    assert got == [
        ("p1", Decimal("324000.00"), False, 2, False),
        ("p2", Decimal("0.10"), False, 1, False),
        ("p3", None, True, 1, False),  # never rounded to 1.01 (or 1.00)
        ("p4", Decimal("1000.00"), False, None, True),
    ]
