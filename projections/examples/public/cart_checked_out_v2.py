"""Public event cart_checked_out v2: v1 plus the amount paid and its currency."""

from projections import Column, Sql
from projections.public_events import PublicEvent
from projections.shop._cart import CART_EVENTS, ITEM_FIELDS

PROJECTION = PublicEvent(
    name="cart_checked_out",
    version=2,
    description="One public event per confirmed cart: customer (opaque id), item count, amount, currency, when.",
    key=("cart_id",),
    consumes=CART_EVENTS,
    requires={
        "CartOpened": {"customer_id": "VARCHAR"},
        "ItemAdded": {**ITEM_FIELDS, "currency": "VARCHAR"},
        "ItemRemoved": ITEM_FIELDS,
    },
    columns=(
        Column("cart_id", "VARCHAR", "The cart."),
        Column("customer_id", "VARCHAR", "The customer's opaque id (CartOpened.customer_id)."),
        Column("items", "BIGINT", "Items in the cart when it was confirmed."),
        Column("amount", "DECIMAL(18,2)", "What the customer paid: the sum of the items' quantity × unit price."),
        Column("currency", "VARCHAR", "The cart's currency (its items')."),
        Column("checked_out_at", "TIMESTAMPTZ", "When the cart was confirmed (its CartConfirmed)."),
    ),
    body=Sql(
        """
        WITH lines AS (
            SELECT *, CASE event_type WHEN 'ItemAdded' THEN 1 WHEN 'ItemRemoved' THEN -1 END AS sign
            FROM events
        )
        SELECT
            stream_id AS cart_id,
            arg_min(data->>'customer_id', stream_version) FILTER (WHERE event_type = 'CartOpened') AS customer_id,
            coalesce(sum(sign * CAST(data->>'quantity' AS BIGINT)), 0) AS items,
            coalesce(sum(CAST(sign * CAST(data->>'quantity' AS BIGINT) AS DECIMAL(18,0))
                * CAST(data->>'unit_price' AS DECIMAL(18,2))), 0) AS amount,
            max(data->>'currency') FILTER (WHERE event_type = 'ItemAdded') AS currency,
            arg_max(recorded_at, stream_version) FILTER (WHERE event_type = 'CartConfirmed') AS checked_out_at,
            arg_max(global_position, stream_version) AS last_global_position
        FROM lines
        GROUP BY stream_id
        HAVING arg_max(event_type, stream_version) FILTER (WHERE event_type IN ('CartConfirmed', 'CartCancelled'))
            = 'CartConfirmed'
        """
    ),
)
