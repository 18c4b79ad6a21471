"""The demo shop: deterministic carts appended by concurrent writers that commit out of order.

Carts are streams (``stream_type`` ``cart``, ``stream_id`` ``cart-<uuid>``) with the events
CartOpened v1 ``{customer_id, email}`` (the email is the shop's personal data: private, see
``projections/shop/upcasters.py``), ItemAdded v1 ``{product_id, quantity, unit_price}`` and v2
``{product_id, quantity, unit_price, currency}``, ItemRemoved v1 ``{product_id, quantity,
unit_price}``, CartConfirmed v1 ``{}`` and CartCancelled v1 ``{reason}``. Every event carries
``correlation_id`` and ``causation_id`` in its metadata.

The *content* is a pure function of the seed (ids, payloads, timestamps). The writers are
threads, each appending its share of carts in several transactions that stay open for a
moment after their INSERT, so positions are taken in one order and committed in another:
the data itself exercises the gap-safe reader.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from psycopg import sql

from eventstore.connection import connect
from eventstore.native_store import NewEvent, StreamAppend, append_streams, table_ref

__all__ = [
    "CANCEL_REASONS",
    "PRODUCTS",
    "Cart",
    "DemoResult",
    "append_demo_shop",
    "first_stream_id",
    "generate_carts",
    "run_writers",
]

PRODUCTS: dict[str, Decimal] = {
    f"SKU-{n:03d}": Decimal(price)
    for n, price in enumerate(
        [
            "4.99",
            "12.50",
            "19.90",
            "7.25",
            "99.00",
            "3.10",
            "45.00",
            "8.80",
            "15.75",
            "0.99",
            "250.00",
            "33.33",
            "61.20",
            "5.55",
            "18.00",
            "72.40",
            "9.95",
            "120.00",
            "2.50",
            "27.30",
        ],
        start=1,
    )
}
CANCEL_REASONS = ("changed_mind", "payment_failed", "out_of_stock", "timeout")
_Share = TypeVar("_Share")
#: Carts opened after this fraction of the simulated period emit ItemAdded v2 (with currency).
V2_CUTOVER = 0.5
START_TIME = datetime(2026, 1, 1, tzinfo=UTC)
PERIOD = timedelta(days=90)


@dataclass(frozen=True)
class Cart:
    """One cart stream and the steps (each a list of events appended in one transaction)."""

    stream_id: str
    steps: tuple[tuple[NewEvent, ...], ...]

    @property
    def events(self) -> list[NewEvent]:
        return [event for step in self.steps for event in step]


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


_FIRST_NAMES = ("ada", "alan", "grace", "edsger", "barbara", "donald", "frances", "john", "margaret", "ken")
_LAST_NAMES = ("lovelace", "turing", "hopper", "dijkstra", "liskov", "knuth", "allen", "backus", "hamilton", "thompson")


def _cart(rng: random.Random, index: int, n_carts: int, customers: Sequence[tuple[str, str]]) -> Cart:
    cart_uuid = _uuid(rng)
    stream_id = f"cart-{cart_uuid}"
    correlation = str(_uuid(rng))
    opened = START_TIME + PERIOD * (index / max(n_carts, 1)) + timedelta(seconds=rng.randint(0, 3600))
    clock = opened
    v2 = index >= n_carts * V2_CUTOVER
    customer, email = rng.choice(customers)
    currency = "USD" if v2 and rng.random() < 0.2 else "EUR"
    events: list[NewEvent] = []

    def emit(event_type: str, data: dict[str, Any], version: int = 1) -> None:
        nonlocal clock
        clock += timedelta(seconds=rng.randint(5, 900))
        causation = str(events[-1].event_id) if events else correlation
        events.append(
            NewEvent(
                event_type,
                data,
                event_version=version,
                metadata={"correlation_id": correlation, "causation_id": causation},
                event_id=_uuid(rng),
                recorded_at=clock,
            )
        )

    emit("CartOpened", {"customer_id": customer, "email": email})
    basket: dict[str, int] = {}
    for _ in range(rng.choice((1, 1, 2, 2, 3, 3, 4, 5, 6))):
        product = rng.choice(list(PRODUCTS))
        quantity = rng.choice((1, 1, 1, 2, 2, 3, 5))
        basket[product] = basket.get(product, 0) + quantity
        payload: dict[str, Any] = {
            "product_id": product,
            "quantity": quantity,
            "unit_price": PRODUCTS[product],
        }
        if v2:
            payload["currency"] = currency
            emit("ItemAdded", payload, version=2)
        else:
            emit("ItemAdded", payload)
    if rng.random() < 0.3:
        product = rng.choice(sorted(basket))
        quantity = rng.randint(1, basket[product])
        basket[product] -= quantity
        emit("ItemRemoved", {"product_id": product, "quantity": quantity, "unit_price": PRODUCTS[product]})
    ending = rng.random()
    if ending < 0.6:
        emit("CartConfirmed", {})
    elif ending < 0.85:
        emit("CartCancelled", {"reason": rng.choice(CANCEL_REASONS)})
    # Split the stream into 1-3 appends, as a shopper's requests would be.
    cuts = sorted(rng.sample(range(1, len(events)), k=min(len(events) - 1, rng.randint(0, 2))))
    bounds = [0, *cuts, len(events)]
    steps = tuple(tuple(events[a:b]) for a, b in itertools.pairwise(bounds))
    return Cart(stream_id, steps)


def generate_carts(events: int, seed: int = 42) -> Iterator[Cart]:
    """Yield carts deterministically until about ``events`` events (never fewer) are produced."""
    # Customers come from their own generator so that the first cart's stream id depends on
    # the seed alone: `projectionist demo` uses it to recognise a shop already appended.
    people = random.Random(f"customers-{seed}")
    ids = [f"customer-{_uuid(people).hex[:12]}" for _ in range(max(10, events // 40))]
    # Drawn after the ids, so that adding emails left every id (and so every cart) as it was.
    customers = [(c, f"{people.choice(_FIRST_NAMES)}.{people.choice(_LAST_NAMES)}.{c[-4:]}@example.com") for c in ids]
    rng = random.Random(seed)
    n_carts = max(1, events // 5)
    produced = 0
    index = 0
    while produced < events:
        cart = _cart(rng, index, n_carts, customers)
        produced += len(cart.events)
        index += 1
        yield cart


def first_stream_id(seed: int) -> str:
    """The stream id of the first cart of the shop with ``seed``, whatever its size."""
    return next(generate_carts(1, seed)).stream_id


def run_writers(shares: Sequence[_Share], write: Callable[[int, _Share], None]) -> None:
    """Run ``write(worker, share)`` on one thread per share; re-raise the first error in the caller."""
    errors: list[BaseException] = []

    def guarded(worker: int, share: _Share) -> None:
        try:
            write(worker, share)
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(w, s), daemon=True) for w, s in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@dataclass(frozen=True)
class DemoResult:
    """What ``append_demo_shop`` wrote."""

    streams: int
    events: int
    transactions: int
    seconds: float
    out_of_order_commits: int = 0  # transactions that committed after one holding higher positions


def append_demo_shop(
    dsn: str,
    *,
    events: int = 10_000,
    writers: int = 4,
    seed: int = 42,
    schema: str = "public",
    table: str = "events",
    streams_per_transaction: int = 20,
    hold_seconds: float = 0.002,
) -> DemoResult:
    """Append the demo shop with ``writers`` concurrent writers; return counts.

    Each writer takes every ``writers``-th cart, then appends step k of all its carts before
    step k+1 (so a cart's events stay in order) in transactions of ``streams_per_transaction``
    streams, holding each transaction open a random moment up to ``hold_seconds`` after its
    INSERT so that commits interleave out of position order. With two writers or more, the
    first writer's first transaction also waits for the second writer's first commit, so at
    least one transaction always commits after one holding higher positions.
    """
    carts = list(generate_carts(events, seed))
    shares = [carts[w::writers] for w in range(writers)]
    transactions = [0] * writers
    # Commits are numbered under a lock held across COMMIT, so the order below is the real one.
    commit_lock = threading.Lock()
    committed: list[tuple[int, int]] = []  # (lowest, highest) position per commit, in commit order
    first_inserted, second_committed = threading.Event(), threading.Event()
    ref = table_ref(schema, table)
    started = time.perf_counter()

    def write(worker: int, share: list[Cart]) -> None:
        rng = random.Random(seed * 1000 + worker)
        versions: dict[str, int] = {}
        try:
            with connect(dsn) as conn:
                if worker == 1:
                    first_inserted.wait(5)
                depth = max((len(c.steps) for c in share), default=0)
                for step in range(depth):
                    pending = [c for c in share if step < len(c.steps)]
                    for i in range(0, len(pending), streams_per_transaction):
                        chunk = pending[i : i + streams_per_transaction]
                        appends = [
                            StreamAppend(c.stream_id, "cart", c.steps[step], versions.get(c.stream_id, 0))
                            for c in chunk
                        ]
                        conn.execute("SELECT 1")  # open the transaction: append_streams runs inside it
                        versions.update(append_streams(conn, appends, schema=schema, table=table))
                        span = conn.execute(
                            sql.SQL(
                                "SELECT min(global_position), max(global_position) FROM {} "
                                "WHERE transaction_id = pg_current_xact_id_if_assigned()"
                            ).format(ref)
                        ).fetchone()
                        if worker == 0 and transactions[0] == 0 and writers > 1:
                            first_inserted.set()
                            second_committed.wait(5)
                        elif hold_seconds:
                            time.sleep(rng.random() * hold_seconds)
                        with commit_lock:
                            conn.commit()
                            if span and span[0] is not None:
                                committed.append((int(span[0]), int(span[1])))
                        transactions[worker] += 1
                        if worker == 1:
                            second_committed.set()
        finally:
            if worker == 0:
                first_inserted.set()
            if worker == 1:
                second_committed.set()

    run_writers(shares, write)
    out_of_order, highest = 0, 0
    for lowest, top in committed:
        if lowest < highest:
            out_of_order += 1
        highest = max(highest, top)
    return DemoResult(
        streams=len(carts),
        events=sum(len(c.events) for c in carts),
        transactions=sum(transactions),
        seconds=time.perf_counter() - started,
        out_of_order_commits=out_of_order,
    )
