"""The demo shop written with the ``eventsourcing`` library's own ``Application`` (PostgreSQL persistence).

``Shop`` stores into table ``shop_events``. ``Cart`` events carry the demo shop's payloads and
``correlation_id``/``causation_id`` as attributes. ``ItemAdded`` is at ``class_version`` 2
(with ``currency``, upcast from version 1 by ``upcast_v1_v2``). An ``ItemAdded`` without a
currency is stored as release 1 of the shop stored it — no ``currency``, no ``class_version``
(:class:`ShopMapper`) — so one table holds both versions of the event, as after a real upgrade.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from eventstore.connection import libpq_conninfo
from eventstore.demo import Cart as DemoCart
from eventstore.demo import DemoResult, generate_carts, run_writers
from eventstore.native_store import NewEvent

__all__ = ["Cart", "Shop", "ShopMapper", "append_demo_shop_eventsourcing", "postgres_env"]


def postgres_env(dsn: str, **extra: str) -> dict[str, str]:
    """The library's environment configuration (``PERSISTENCE_MODULE=eventsourcing.postgres``) for ``dsn``."""
    params = libpq_conninfo(dsn)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(params.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(params.get("host") or "localhost"),
        "POSTGRES_PORT": str(params.get("port") or "5432"),
        "POSTGRES_USER": str(params.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(params.get("password") or ""),
    }
    env.update(extra)
    return env


class Cart(Aggregate):
    """A shopping cart; its events mirror the native demo shop's."""

    class CartOpened(Aggregate.Created):
        customer_id: str
        correlation_id: str
        causation_id: str
        email: str = ""  # the demo's private field (empty in carts created without one)

    class ItemAdded(Aggregate.Event):
        class_version = 2
        product_id: str
        quantity: int
        unit_price: float
        correlation_id: str
        causation_id: str
        currency: str | None = None  # None: stored as version 1 (see ShopMapper)

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["currency"] = "EUR"

    class ItemRemoved(Aggregate.Event):
        product_id: str
        quantity: int
        unit_price: float
        correlation_id: str
        causation_id: str

    class CartConfirmed(Aggregate.Event):
        correlation_id: str
        causation_id: str

    class CartCancelled(Aggregate.Event):
        reason: str
        correlation_id: str
        causation_id: str

    def __init__(self, customer_id: str, correlation_id: str, causation_id: str, email: str = "") -> None:
        self.customer_id = customer_id
        self.email = email

    def record(self, event_type: str, version: int, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """Trigger the event class for ``event_type`` (an ``ItemAdded`` v1 has no currency)."""
        cls: Any = getattr(Cart, event_type)
        attributes = {k: (float(v) if k == "unit_price" else v) for k, v in data.items()}
        self.trigger_event(
            cls,
            correlation_id=str(metadata.get("correlation_id", "")),
            causation_id=str(metadata.get("causation_id", "")),
            **attributes,
        )


class ShopMapper(Mapper[uuid.UUID]):
    """The library's mapper, except that an ``ItemAdded`` without currency is written as version 1."""

    def to_stored_event(self, domain_event: DomainEventProtocol[uuid.UUID]) -> StoredEvent:
        if not (isinstance(domain_event, Cart.ItemAdded) and domain_event.currency is None):
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        del state["currency"]
        stored = self.transcoder.encode(state)
        if self.compressor:
            stored = self.compressor.compress(stored)
        if self.cipher:
            stored = self.cipher.encrypt(stored)
        return StoredEvent(originator_id, originator_version, get_topic(type(domain_event)), stored)


class Shop(Application[uuid.UUID]):
    """The demo shop application: table ``shop_events``."""

    def construct_mapper(self) -> Mapper[uuid.UUID]:
        """The library's mapper construction, with :class:`ShopMapper`."""
        return self.factory.mapper(transcoder=self.construct_transcoder(), mapper_class=ShopMapper)


def _new_cart(events: Sequence[NewEvent], stream_uuid: uuid.UUID) -> Cart:
    first = events[0]
    cart = Cart._create(
        Cart.CartOpened,
        id=stream_uuid,
        customer_id=str(first.data["customer_id"]),
        email=str(first.data.get("email", "")),
        correlation_id=str(first.metadata.get("correlation_id", "")),
        causation_id=str(first.metadata.get("causation_id", "")),
    )
    for event in events[1:]:
        cart.record(event.event_type, event.event_version, event.data, event.metadata)
    return cart


def append_demo_shop_eventsourcing(
    dsn: str, *, events: int = 1_000, seed: int = 42, writers: int = 2, env: Mapping[str, str] | None = None
) -> DemoResult:
    """Append the demo shop through ``Shop`` (the library's Application) with ``writers`` threads.

    A cart's steps are saved one ``save()`` (one transaction) each, in order; carts are shared
    round-robin between the writer threads, so the library's table lock serializes them.
    """
    carts = list(generate_carts(events, seed))
    shop = Shop(env=postgres_env(dsn, **(env or {})))
    saves = [0] * writers
    started = time.perf_counter()

    def write(worker: int, share: list[DemoCart]) -> None:
        for demo_cart in share:
            stream_uuid = uuid.UUID(demo_cart.stream_id.removeprefix("cart-"))
            aggregate: Cart | None = None
            for step in demo_cart.steps:
                if aggregate is None:
                    aggregate = _new_cart(step, stream_uuid)
                else:
                    for event in step:
                        aggregate.record(event.event_type, event.event_version, event.data, event.metadata)
                shop.save(aggregate)
                saves[worker] += 1

    try:
        run_writers([carts[w::writers] for w in range(writers)], write)
    finally:
        shop.close()
    return DemoResult(
        streams=len(carts),
        events=sum(len(c.events) for c in carts),
        transactions=sum(saves),
        seconds=time.perf_counter() - started,
    )
