"""daily_revenue (polars): confirmed carts per day and currency, with their revenue and items.

A cart counts on the UTC day of its confirmation (the recorded_at of its last CartConfirmed, when
that is its last ending event), not the day it was opened: a confirmation then touches only its
own day, and a cart cancelled after confirming leaves that day. A confirmed cart without any
ItemAdded has no currency and is not counted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from projections import Column, Polars, Projection
from projections.shop._cart import ITEM_FIELDS

if TYPE_CHECKING:
    import polars as pl

# polars is imported inside the functions, which run only when this projection is computed: every
# command that lists the projections imports this module, and `import polars` takes 0.3 s.

ITEM_EVENTS = ("ItemAdded", "ItemRemoved")


def confirmed_carts(events: pl.LazyFrame) -> pl.LazyFrame:
    """One row per confirmed cart: stream_id, day, currency, items, revenue, last_global_position."""
    import polars as pl

    by_version = events.sort("stream_version")
    endings = (
        by_version.filter(pl.col("event_type").is_in(["CartConfirmed", "CartCancelled"]))
        .group_by("stream_id")
        .agg(pl.col("event_type").last().alias("ending"), pl.col("recorded_at").last().alias("ended_at"))
        .filter(pl.col("ending") == "CartConfirmed")
        .select("stream_id", pl.col("ended_at").dt.convert_time_zone("UTC").dt.date().alias("day"))
    )
    sign = pl.when(pl.col("event_type") == "ItemAdded").then(1).otherwise(-1)
    quantity = pl.col("data").str.json_path_match("$.quantity").cast(pl.Int64)
    price = pl.col("data").str.json_path_match("$.unit_price").cast(pl.Decimal(18, 2))
    items = (
        by_version.filter(pl.col("event_type").is_in(ITEM_EVENTS))
        .with_columns((sign * quantity).alias("net_quantity"))
        .with_columns((pl.col("net_quantity").cast(pl.Decimal(18, 0)) * price).alias("net_amount"))
        .group_by("stream_id")
        .agg(
            pl.col("net_quantity").sum().alias("items"),
            pl.col("net_amount").sum().alias("revenue"),
            pl.col("data")
            .filter(pl.col("event_type") == "ItemAdded")
            .first()
            .str.json_path_match("$.currency")
            .alias("currency"),
        )
        .filter(pl.col("currency").is_not_null())
    )
    last = events.group_by("stream_id").agg(pl.col("global_position").max().alias("last_global_position"))
    return endings.join(items, on="stream_id").join(last, on="stream_id")


def daily_revenue(events: pl.LazyFrame) -> pl.LazyFrame:
    """Confirmed carts per (day, currency)."""
    import polars as pl

    return (
        confirmed_carts(events)
        .group_by("day", "currency")
        .agg(
            pl.len().alias("carts_confirmed"),
            pl.col("revenue").sum(),
            pl.col("items").sum(),
            pl.col("last_global_position").max(),
        )
    )


def contributions(events: pl.LazyFrame) -> pl.LazyFrame:
    """The (day, currency) each cart counts in."""
    return confirmed_carts(events).select("stream_id", "day", "currency")


PROJECTION = Projection(
    name="daily_revenue",
    version=1,
    description="Confirmed carts per UTC day of confirmation and currency: count, revenue, items.",
    key=("day", "currency"),
    consumes=("ItemAdded", "ItemRemoved", "CartConfirmed", "CartCancelled"),
    requires={"ItemAdded": {**ITEM_FIELDS, "currency": "VARCHAR"}, "ItemRemoved": ITEM_FIELDS},
    columns=(
        Column("day", "DATE", "UTC day of the cart's confirmation (its last CartConfirmed)."),
        Column("currency", "VARCHAR", "Currency of the carts (that of their first ItemAdded)."),
        Column("carts_confirmed", "BIGINT", "Carts confirmed that day in that currency (and not cancelled after)."),
        Column("revenue", "DECIMAL(18,2)", "Sum of the confirmed carts' total amounts (added minus removed)."),
        Column("items", "BIGINT", "Sum of the confirmed carts' item quantities (added minus removed)."),
    ),
    body=Polars(daily_revenue),
    stream_keys=Polars(contributions),
)
