"""cart_summary v2 (fold): v1 plus currency and distinct products; a cancelled cart's total is 0."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from projections import Column, Event, ExpectedChange, Fold, Projection
from projections.shop._cart import CART_COLUMNS, CART_EVENTS, CART_REQUIRES

ENDINGS = {"CartConfirmed": "confirmed", "CartCancelled": "cancelled"}


def initial() -> dict[str, Any]:
    """A cart before its first event."""
    return {
        "customer_id": None,
        "status": "open",
        "item_quantity": 0,
        "amount": Decimal(0),
        "currency": None,
        "quantities": {},
        "opened_at": None,
        "last_event_at": None,
    }


def evolve(cart: dict[str, Any], event: Event) -> dict[str, Any]:
    """Apply one cart event (payload fields were validated before the fold, see requires)."""
    kind = event.event_type
    data = event.data
    if kind == "ItemAdded" or kind == "ItemRemoved":
        sign = 1 if kind == "ItemAdded" else -1
        quantity = int(data["quantity"])
        amount = quantity * Decimal(data["unit_price"])
        product = data["product_id"]
        if kind == "ItemAdded" and cart["currency"] is None:
            cart["currency"] = data["currency"]
        cart["item_quantity"] += sign * quantity
        cart["amount"] += sign * amount
        cart["quantities"][product] = cart["quantities"].get(product, 0) + sign * quantity
    elif kind == "CartOpened":
        cart["customer_id"] = data["customer_id"]
        cart["opened_at"] = event.recorded_at
    else:
        cart["status"] = ENDINGS[kind]
    cart["last_event_at"] = event.recorded_at
    return cart


def result(cart: dict[str, Any]) -> dict[str, Any]:
    """The row of a cart."""
    return {
        "customer_id": cart["customer_id"],
        "status": cart["status"],
        "item_quantity": cart["item_quantity"],
        "total_amount": Decimal(0) if cart["status"] == "cancelled" else cart["amount"],
        "currency": cart["currency"],
        "distinct_products": sum(1 for quantity in cart["quantities"].values() if quantity > 0),
        "opened_at": cart["opened_at"],
        "last_event_at": cart["last_event_at"],
    }


PROJECTION = Projection(
    name="cart_summary",
    version=2,
    description="One row per cart: v1 plus currency and distinct products; a cancelled cart's total_amount is 0.",
    key=("cart_id",),
    consumes=CART_EVENTS,
    requires={**CART_REQUIRES, "ItemAdded": {**CART_REQUIRES["ItemAdded"], "currency": "VARCHAR"}},
    columns=(
        *(
            Column(c.name, c.type, "0 for a cancelled cart; otherwise as in v1. " + c.description)
            if c.name == "total_amount"
            else c
            for c in CART_COLUMNS
        ),
        Column("currency", "VARCHAR", "Currency of the cart's first ItemAdded (v1 events are EUR); NULL if none."),
        Column("distinct_products", "BIGINT", "Number of products with a positive net quantity in the cart."),
    ),
    body=Fold(initial=initial, evolve=evolve, result=result),
    expected_changes=(
        ExpectedChange(
            "only cancelled carts change total_amount (it becomes 0)",
            columns=("total_amount",),
            where="b.status = 'cancelled' AND b.total_amount = 0",
        ),
    ),
)
