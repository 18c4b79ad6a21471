"""Analytics views over the lake: typed per event type and version, stream stats, daily volume, comments."""

from __future__ import annotations

import duckdb

from tests.warehouse.conftest import append_shop
from warehouse.analytics import refresh_analytics
from warehouse.ingest import ingest
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
