"""The bundled projections of the demo shop (carts of eventstore.demo), one module per projection version.

Shared conventions: a cart's status is the last of CartConfirmed/CartCancelled in stream order
(``open`` if neither); a cart's currency is that of its first ItemAdded (ItemAdded v1 is read as v2
with currency EUR, see ``upcasters.py``); amounts are exact DECIMAL(18,2).
"""
