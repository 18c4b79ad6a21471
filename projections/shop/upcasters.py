"""Upcasters of the demo shop's events, and what of them is public (one place per domain's event contract)."""

from projections import PublicFields, Upcaster

UPCASTERS = [
    Upcaster(
        "ItemAdded",
        1,
        # A default, not an overwrite: a store that cannot record the schema version (Emmett writes
        # '1' for every event) hands out v2 events as v1, and their currency must survive.
        defaults={"currency": "EUR"},
        description="ItemAdded v1 predates multi-currency carts: every v1 price was in EUR (stored currency kept).",
    ),
]

_ITEM = ("product_id", "quantity", "unit_price")
#: The public payload fields per event type and version; every other field is private (here: the
#: customer's email), shown only on the operator path and removed by `projectionist forget`.
PUBLIC_FIELDS = [
    PublicFields("CartOpened", 1, public=("customer_id",), description="customer_id is an opaque id, email private."),
    PublicFields("ItemAdded", 1, public=_ITEM),
    PublicFields("ItemAdded", 2, public=(*_ITEM, "currency")),
    PublicFields("ItemRemoved", 1, public=_ITEM),
    PublicFields("CartConfirmed", 1),
    PublicFields("CartCancelled", 1, public=("reason",), description="reason is one of a fixed list."),
]
#: The payload field naming a person: `projectionist forget customer-…` makes their private fields unreadable.
SUBJECT_FIELD = "customer_id"
