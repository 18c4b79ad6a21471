"""product_sales (SQL): per product and currency, what confirmed carts bought.

Currencies are never added together, so the key is (product_id, currency). A product's line in a
cart is its net quantity and amount (added minus removed); a cart counts for a product when its
net quantity is positive. last_global_position is the last event of the contributing carts.
"""

from projections import Column, Projection, Sql
from projections.shop._cart import ITEM_FIELDS

# Net lines (cart, product, currency) of confirmed carts: shared by the body and stream_keys.
CONFIRMED_LINES = """
WITH carts AS (
    SELECT stream_id,
        arg_max(event_type, stream_version) FILTER (WHERE event_type IN ('CartConfirmed', 'CartCancelled')) AS ending,
        arg_min(data->>'currency', stream_version) FILTER (WHERE event_type = 'ItemAdded') AS currency,
        max(global_position) AS last_position
    FROM events
    GROUP BY stream_id
),
lines AS (
    SELECT e.stream_id, e.data->>'product_id' AS product_id, c.currency, c.last_position,
        sum(CASE e.event_type WHEN 'ItemAdded' THEN 1 ELSE -1 END * CAST(e.data->>'quantity' AS BIGINT)) AS quantity,
        sum(CASE e.event_type WHEN 'ItemAdded' THEN 1 ELSE -1 END * CAST(e.data->>'quantity' AS BIGINT)
            * CAST(e.data->>'unit_price' AS DECIMAL(18,2))) AS amount
    FROM events AS e JOIN carts AS c USING (stream_id)
    WHERE c.ending = 'CartConfirmed' AND c.currency IS NOT NULL AND e.event_type IN ('ItemAdded', 'ItemRemoved')
    GROUP BY ALL
)
"""

PROJECTION = Projection(
    name="product_sales",
    version=1,
    description="Per product and currency: quantity sold in confirmed carts, revenue and number of carts.",
    key=("product_id", "currency"),
    consumes=("ItemAdded", "ItemRemoved", "CartConfirmed", "CartCancelled"),
    requires={"ItemAdded": {**ITEM_FIELDS, "currency": "VARCHAR"}, "ItemRemoved": ITEM_FIELDS},
    columns=(
        Column("product_id", "VARCHAR", "The product (ItemAdded.product_id)."),
        Column("currency", "VARCHAR", "Currency of the carts (that of their first ItemAdded)."),
        Column("quantity_sold", "BIGINT", "Net quantity (added minus removed) in confirmed carts."),
        Column(
            "revenue", "DECIMAL(18,2)", "Net amount (quantity × unit_price, added minus removed) in confirmed carts."
        ),
        Column("carts", "BIGINT", "Confirmed carts holding a positive net quantity of the product."),
    ),
    body=Sql(
        CONFIRMED_LINES
        + """
        SELECT product_id, currency, sum(quantity) AS quantity_sold, sum(amount) AS revenue,
            count(*) FILTER (WHERE quantity > 0) AS carts, max(last_position) AS last_global_position
        FROM lines
        GROUP BY product_id, currency
        """
    ),
    stream_keys=Sql(CONFIRMED_LINES + "SELECT stream_id, product_id, currency FROM lines"),
)
