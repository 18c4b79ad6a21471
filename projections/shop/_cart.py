"""Declarations shared by the cart projections (a helper module: the registry skips files starting with '_')."""

from projections import Column

CART_EVENTS = ("CartOpened", "ItemAdded", "ItemRemoved", "CartConfirmed", "CartCancelled")
ITEM_FIELDS = {"product_id": "VARCHAR", "quantity": "BIGINT", "unit_price": "DECIMAL(18,2)"}
CART_REQUIRES = {
    "CartOpened": {"customer_id": "VARCHAR"},
    "ItemAdded": ITEM_FIELDS,
    "ItemRemoved": ITEM_FIELDS,
}
CART_COLUMNS = (
    Column("cart_id", "VARCHAR", "The cart: its stream id."),
    Column("customer_id", "VARCHAR", "Customer who opened the cart (CartOpened.customer_id)."),
    Column(
        "status",
        "VARCHAR",
        "open, confirmed or cancelled: the last of CartConfirmed/CartCancelled in stream order, open if neither.",
    ),
    Column("item_quantity", "BIGINT", "Quantity of ItemAdded minus quantity of ItemRemoved."),
    Column(
        "total_amount",
        "DECIMAL(18,2)",
        "Sum of quantity × unit_price of ItemAdded minus the same of ItemRemoved, in the cart's currency.",
    ),
    Column("opened_at", "TIMESTAMPTZ", "When the cart was opened (CartOpened.recorded_at)."),
    Column("last_event_at", "TIMESTAMPTZ", "recorded_at of the cart's last event."),
)
