"""The bundled projections of the demo shop (carts of eventstore.demo), one module per projection version.

Shared conventions: a cart's status is the last of CartConfirmed/CartCancelled in stream order
(``open`` if neither); a cart's currency is that of its first ItemAdded (ItemAdded v1 is read as v2
with currency EUR, see ``upcasters.py``); amounts are exact DECIMAL(18,2).
"""

#: The event types that finish a stream, per stream type: a cart whose last event is one of them is
#: done, and `projectionist archive` may move it to the lake's cold tier (PROJECTIONIST_CLOSING_EVENT_TYPES
#: overrides this for other domains; see warehouse.archive.closing_event_types).
CLOSING_EVENT_TYPES: dict[str, tuple[str, ...]] = {"cart": ("CartConfirmed", "CartCancelled")}
