"""The demo shop's streams: a cart is finished once it is confirmed or cancelled (nothing follows either)."""

CLOSING_EVENT_TYPES = {"cart": ("CartConfirmed", "CartCancelled")}
