"""Independent, plain-Python computations of the bundled shop projections, straight from demo carts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC
from decimal import Decimal
from typing import Any

from eventstore.demo import Cart


def _cart(cart: Cart, positions: Mapping[str, int]) -> dict[str, Any]:
    events = cart.events
    status = "open"
    quantity = 0
    amount = Decimal(0)
    per_product: dict[str, int] = defaultdict(int)
    currency = None
    customer = opened = None
    for event in events:
        data = event.data
        if event.event_type == "CartOpened":
            customer, opened = data["customer_id"], event.recorded_at
        elif event.event_type in ("ItemAdded", "ItemRemoved"):
            sign = 1 if event.event_type == "ItemAdded" else -1
            quantity += sign * data["quantity"]
            amount += sign * data["quantity"] * data["unit_price"]
            per_product[data["product_id"]] += sign * data["quantity"]
            if event.event_type == "ItemAdded" and currency is None:
                currency = data.get("currency", "EUR")
        elif event.event_type == "CartConfirmed":
            status = "confirmed"
            confirmed_at = event.recorded_at
        elif event.event_type == "CartCancelled":
            status = "cancelled"
    return {
        "cart_id": cart.stream_id,
        "customer_id": customer,
        "status": status,
        "item_quantity": quantity,
        "total_amount": amount,
        "currency": currency,
        "per_product": dict(per_product),
        "amount_per_product": _amounts(events),
        "opened_at": opened,
        "last_event_at": events[-1].recorded_at,
        "confirmed_day": confirmed_at.astimezone(UTC).date() if status == "confirmed" else None,
        "last_global_position": max(positions[str(e.event_id)] for e in events),
    }


def _amounts(events: Sequence[Any]) -> dict[str, Decimal]:
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    for event in events:
        if event.event_type in ("ItemAdded", "ItemRemoved"):
            sign = 1 if event.event_type == "ItemAdded" else -1
            amounts[event.data["product_id"]] += sign * event.data["quantity"] * event.data["unit_price"]
    return dict(amounts)


def cart_summary(carts: Sequence[Cart], positions: Mapping[str, int], version: int) -> list[dict[str, Any]]:
    rows = []
    for cart in carts:
        c = _cart(cart, positions)
        row = {k: c[k] for k in ("cart_id", "customer_id", "status", "item_quantity", "total_amount")}
        row |= {"opened_at": c["opened_at"], "last_event_at": c["last_event_at"]}
        if version == 2:
            if c["status"] == "cancelled":
                row["total_amount"] = Decimal(0)
            row["currency"] = c["currency"]
            row["distinct_products"] = sum(1 for q in c["per_product"].values() if q > 0)
        row["last_global_position"] = c["last_global_position"]
        rows.append(row)
    return sorted(rows, key=lambda r: r["cart_id"])


def daily_revenue(carts: Sequence[Cart], positions: Mapping[str, int]) -> list[dict[str, Any]]:
    days: dict[tuple[Any, str], dict[str, Any]] = {}
    for cart in carts:
        c = _cart(cart, positions)
        if c["status"] != "confirmed" or c["currency"] is None:
            continue
        row = days.setdefault(
            (c["confirmed_day"], c["currency"]),
            {
                "day": c["confirmed_day"],
                "currency": c["currency"],
                "carts_confirmed": 0,
                "revenue": Decimal(0),
                "items": 0,
                "last_global_position": 0,
            },
        )
        row["carts_confirmed"] += 1
        row["revenue"] += c["total_amount"]
        row["items"] += c["item_quantity"]
        row["last_global_position"] = max(row["last_global_position"], c["last_global_position"])
    return [days[k] for k in sorted(days)]


def product_sales(carts: Sequence[Cart], positions: Mapping[str, int]) -> list[dict[str, Any]]:
    products: dict[tuple[str, str], dict[str, Any]] = {}
    for cart in carts:
        c = _cart(cart, positions)
        if c["status"] != "confirmed" or c["currency"] is None:
            continue
        for product, quantity in c["per_product"].items():
            row = products.setdefault(
                (product, c["currency"]),
                {
                    "product_id": product,
                    "currency": c["currency"],
                    "quantity_sold": 0,
                    "revenue": Decimal(0),
                    "carts": 0,
                    "last_global_position": 0,
                },
            )
            row["quantity_sold"] += quantity
            row["revenue"] += c["amount_per_product"][product]
            row["carts"] += 1 if quantity > 0 else 0
            row["last_global_position"] = max(row["last_global_position"], c["last_global_position"])
    return [products[k] for k in sorted(products)]
