"""Upcasters of the demo shop's events."""

from projections import Upcaster

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
