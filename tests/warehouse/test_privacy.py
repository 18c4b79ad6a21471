"""Private fields: none reaches ``analytics.*``, and ``forget`` removes a subject's from every tier and projection.

The demo shop's CartOpened carries ``email``, declared private (``projections/shop/upcasters.py``).
The checks look at the data itself: every text column of every analytics view against every private
value in the lake; after a forget, every table of the lake, every Parquet file under its data path
and every table of its catalog database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.settings import Settings
from projections import Column, Projection, Registry, Sql, discover
from warehouse import versions
from warehouse.analytics import refresh_analytics
from warehouse.archive import archive_lake
from warehouse.ingest import EventSource, ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.privacy import forget, forgotten, private_leaks
from warehouse.sources import close_source, open_source

CONTACTS = Projection(
    name="customer_contacts",
    version=1,
    description="One row per customer: their email (private) and carts.",
    key=("customer_id",),
    consumes=("CartOpened",),
    columns=(
        Column("customer_id", "VARCHAR", "The customer."),
        Column("email", "VARCHAR", "Their latest email.", public=False),
        Column("carts", "BIGINT", "Carts they opened."),
    ),
    body=Sql(
        "SELECT data->>'customer_id' AS customer_id, arg_max(data->>'email', global_position) AS email, "
        "count(*) AS carts, max(global_position) AS last_global_position FROM events GROUP BY 1"
    ),
    stream_keys=Sql("SELECT DISTINCT stream_id, data->>'customer_id' AS customer_id FROM events"),
)


def shop_registry(*extra: Projection) -> Registry:
    bundled = discover()
    projections = {(p.name, p.version): p for p in [*bundled, *extra]}
    return Registry(projections, bundled.upcasters, bundled.closing_events, bundled.fields)


@pytest.fixture()
def source(store_dsn: str) -> Iterator[EventSource]:
    opened = open_source(Settings.from_env({}), store_dsn)
    yield opened
    close_source(opened)


def analytics_text(con: Any) -> set[str]:
    """Every text value of every analytics view (what an analyst can read there), in one query."""
    parts = [
        f'SELECT DISTINCT CAST("{column}" AS VARCHAR) FROM analytics."{name}"'
        for name, column in con.execute(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = 'lake' "
            "AND schema_name = 'analytics' AND data_type IN ('VARCHAR', 'JSON')"
        ).fetchall()
    ]
    return {str(r[0]) for r in con.execute(" UNION ".join(parts)).fetchall() if r[0] is not None}


def test_no_private_field_reaches_analytics(store_dsn: str, lake_config: LakeConfig, source: EventSource) -> None:
    append_demo_shop(store_dsn, events=300, writers=2, seed=5, hold_seconds=0)
    registry = shop_registry(CONTACTS)
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        versions.project(con, registry)
        refresh_analytics(con, declared=registry.declared_fields(), fields=registry.fields)
        emails = {
            str(r[0])
            for r in con.execute(
                "SELECT DISTINCT data->>'email' FROM raw.events WHERE event_type = 'CartOpened'"
            ).fetchall()
        }
        assert len(emails) >= 5 and all("@example.com" in e for e in emails)
        # The typed view of CartOpened has customer_id but not email; the live contacts view has no email.
        columns = {
            str(r[0])
            for r in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'lake' AND schema_name = 'analytics' "
                "AND table_name IN ('events_cart_opened_v1', 'events_cart_opened', 'customer_contacts')"
            ).fetchall()
        }
        assert "customer_id" in columns and "email" not in columns
        assert not emails & analytics_text(con), "scanning every analytics column found a private value"
        assert private_leaks(con, registry) == []
        # The operator path still has it: the version table keeps the private column.
        assert con.execute("SELECT count(email) FROM projections.customer_contacts_v1").fetchone()[0] > 0

        # A projection that copies the private field into a column it says is public is caught, by name.
        leaky = dataclasses.replace(
            CONTACTS,
            name="leaky_contacts",
            columns=tuple(Column(c.name, c.type, c.description) for c in CONTACTS.columns),
        )
        registry = shop_registry(CONTACTS, leaky)
        versions.project(con, registry)
        leaks = private_leaks(con, registry)
        assert [(x.relation, x.column, x.event_type, x.field) for x in leaks] == [
            ("analytics.leaky_contacts", "email", "CartOpened", "email")
        ]
        assert "analytics.leaky_contacts.email holds" in str(leaks[0])
    finally:
        con.close()


def _lake_rows(con: object, table: str, key: str, subject_keys: set[str]) -> set[tuple[object, ...]]:
    rows = con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()  # type: ignore[attr-defined]
    names = [d[0] for d in con.description]  # type: ignore[attr-defined]
    at = names.index(key)
    return {tuple(r) for r in rows if str(r[at]) not in subject_keys}


def test_forget_removes_a_subjects_private_values_everywhere_and_nothing_else(
    store_dsn: str, lake_config: LakeConfig, source: EventSource, tmp_path: Path
) -> None:
    append_demo_shop(store_dsn, events=300, writers=2, seed=5, hold_seconds=0)
    registry = shop_registry(CONTACTS)
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        versions.project(con, registry)
        versions.rebuild(con, registry, "cart_summary", 1)
        # Half the carts go to the cold tier, so the subject has events in both tiers.
        archive_lake(con, "0s", closing=registry.closing_events)
        subject, email = con.execute(
            "SELECT data->>'customer_id', data->>'email' FROM raw.all_events WHERE event_type = 'CartOpened' "
            "GROUP BY ALL HAVING count(*) >= 2 ORDER BY 1 LIMIT 1"
        ).fetchone()
        carts = {
            str(r[0])
            for r in con.execute(
                "SELECT stream_id FROM raw.all_events WHERE (data->>'customer_id') = ?", [subject]
            ).fetchall()
        }
        tiers = con.execute(
            "SELECT (SELECT count(*) FROM raw.events WHERE data->>'email' = $1), "
            "(SELECT count(*) FROM archive.events WHERE data->>'email' = $1)",
            [email],
        ).fetchone()
        assert tiers[0] > 0 or tiers[1] > 0
        before = {
            "cart_summary_v1": _lake_rows(con, "projections.cart_summary_v1", "cart_id", carts),
            "cart_summary_v2": _lake_rows(con, "projections.cart_summary_v2", "cart_id", carts),
            "customer_contacts_v1": _lake_rows(con, "projections.customer_contacts_v1", "customer_id", {subject}),
            "raw": _lake_rows(con, "raw.all_events", "stream_id", carts),
        }
        subject_rows = con.execute(
            "SELECT cart_id, customer_id, status, total_amount FROM projections.cart_summary_v2 "
            "WHERE cart_id IN (SELECT unnest(?)) ORDER BY 1",
            [sorted(carts)],
        ).fetchall()

        assert forget(con, registry, subject, dry_run=True).events == len(carts)  # a dry run changes nothing
        assert con.execute("SELECT count(*) FROM raw.all_events WHERE data->>'email' = ?", [email]).fetchone()[0]

        result = forget(con, registry, subject)
        assert (result.streams, result.events, result.values_removed) == (len(carts), len(carts), 1)
        assert result.keys_reprojected["customer_contacts v1"] == 1
        assert result.token.startswith("forgotten-")

        # 1. Every tier, every table of the lake: the email is nowhere; the subject's events read the token.
        for schema, name, column in con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() WHERE database_name = 'lake' "
            "AND data_type IN ('VARCHAR', 'JSON')"
        ).fetchall():
            hits = con.execute(
                f'SELECT count(*) FROM lake.{schema}."{name}" WHERE contains(CAST("{column}" AS VARCHAR), ?)', [email]
            ).fetchone()[0]
            assert hits == 0, f"{schema}.{name}.{column} still holds the forgotten email"
        assert {
            str(r[0])
            for r in con.execute(
                "SELECT data->>'email' FROM raw.all_events "
                "WHERE event_type = 'CartOpened' AND (data->>'customer_id') = ?",
                [subject],
            ).fetchall()
        } == {result.token}
        assert con.execute(
            "SELECT email FROM projections.customer_contacts_v1 WHERE customer_id = ?", [subject]
        ).fetchone() == (result.token,)
        # 2. Nothing older is readable: no Parquet file under the data path, no table of the catalog database.
        files = list(Path(lake_config.data_path).rglob("*.parquet"))
        assert files
        for file in files:
            found = con.execute(
                "SELECT count(*) FROM read_parquet(?) AS t WHERE contains(CAST(t AS VARCHAR), ?)", [str(file), email]
            ).fetchone()[0]
            assert found == 0, f"{file} still holds the forgotten email"
        with connect(lake_config.catalog) as catalog:
            tables = [
                str(r[0])
                for r in catalog.execute(
                    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                ).fetchall()
            ]
            for table in tables:
                held = catalog.execute(f"SELECT count(*) FROM {table} AS t WHERE t::text LIKE %s", [f"%{email}%"])
                assert held.fetchone()[0] == 0, f"the catalog's {table} still holds the forgotten email"
        # 3. Everything else is as it was: other keys' rows, other events, and the subject's public columns.
        after = {
            "cart_summary_v1": _lake_rows(con, "projections.cart_summary_v1", "cart_id", carts),
            "cart_summary_v2": _lake_rows(con, "projections.cart_summary_v2", "cart_id", carts),
            "customer_contacts_v1": _lake_rows(con, "projections.customer_contacts_v1", "customer_id", {subject}),
            "raw": _lake_rows(con, "raw.all_events", "stream_id", carts),
        }
        assert after == before
        for info in versions.list_versions(con):  # each version's recorded row count is still its table's
            assert info.rows == con.execute(f"SELECT count(*) FROM {info.table}").fetchone()[0], info.table
        assert (
            con.execute(
                "SELECT cart_id, customer_id, status, total_amount FROM projections.cart_summary_v2 "
                "WHERE cart_id IN (SELECT unnest(?)) ORDER BY 1",
                [sorted(carts)],
            ).fetchall()
            == subject_rows
        )
        # 4. Recorded without the subject; a rebuild gives the same forgotten result; forgetting twice is a no-op.
        (record,) = forgotten(con, subject)
        assert record["token"] == result.token and record["events"] == len(carts)
        assert subject not in {str(v) for v in record.values()}
        versions.rebuild(con, shop_registry(CONTACTS), "customer_contacts", 1)
        assert con.execute(
            "SELECT email FROM projections.customer_contacts_v1 WHERE customer_id = ?", [subject]
        ).fetchone() == (result.token,)
        again = forget(con, registry, subject)
        assert again.events == 0
    finally:
        con.close()
