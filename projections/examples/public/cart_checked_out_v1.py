"""Public event cart_checked_out v1: one per confirmed cart, with what other services may know of it."""

from projections import Column, Sql
from projections.public_events import PublicEvent
from projections.shop._cart import CART_EVENTS

PROJECTION = PublicEvent(
    name="cart_checked_out",
    version=1,
    description="One public event per confirmed cart: its customer (an opaque id), item count and when.",
    key=("cart_id",),
    consumes=CART_EVENTS,
    requires={
        "CartOpened": {"customer_id": "VARCHAR"},
        "ItemAdded": {"quantity": "BIGINT"},
        "ItemRemoved": {"quantity": "BIGINT"},
    },
    columns=(
        Column("cart_id", "VARCHAR", "The cart."),
        Column("customer_id", "VARCHAR", "The customer's opaque id (CartOpened.customer_id)."),
        Column("items", "BIGINT", "Items in the cart when it was confirmed."),
        Column("checked_out_at", "TIMESTAMPTZ", "When the cart was confirmed (its CartConfirmed)."),
    ),
    body=Sql(
        """
        SELECT
            stream_id AS cart_id,
            arg_min(data->>'customer_id', stream_version) FILTER (WHERE event_type = 'CartOpened') AS customer_id,
            coalesce(sum(CASE event_type WHEN 'ItemAdded' THEN 1 WHEN 'ItemRemoved' THEN -1 END
                * CAST(data->>'quantity' AS BIGINT)), 0) AS items,
            arg_max(recorded_at, stream_version) FILTER (WHERE event_type = 'CartConfirmed') AS checked_out_at,
            arg_max(global_position, stream_version) AS last_global_position
        FROM events
        GROUP BY stream_id
        HAVING arg_max(event_type, stream_version) FILTER (WHERE event_type IN ('CartConfirmed', 'CartCancelled'))
            = 'CartConfirmed'
        """
    ),
)
