"""Upcasters of the demo shop's events."""

from projections import Upcaster

UPCASTERS = [
    Upcaster(
        "ItemAdded",
        1,
        sql="""json_merge_patch(data, '{"currency": "EUR"}')""",
        description="ItemAdded v1 predates multi-currency carts: every v1 price was in EUR.",
    ),
]
