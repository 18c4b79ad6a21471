"""Change feeds of live projections and their delivery to other systems (docs/integration.md).

:mod:`~warehouse.feeds.changes` computes the rows inserted, updated and deleted between two lake
snapshots; :mod:`~warehouse.feeds.consumers` keeps each consumer's durable cursor in ``meta``;
:mod:`~warehouse.feeds.delivery` delivers them to a PostgreSQL outbox, HTTP webhooks or Parquet drops.
"""

from warehouse.feeds.changes import Change, ChangeSet, FeedError, changes, current_snapshot
from warehouse.feeds.consumers import (
    KINDS,
    Consumer,
    DeadLetter,
    add_consumer,
    check_consumer,
    dead_letters,
    get_consumer,
    list_consumers,
    remove_consumer,
)
from warehouse.feeds.delivery import DeliveryResult, deliver, ensure_outbox, reset_consumer, sign
from warehouse.feeds.public import public_events, publish

__all__ = [
    "KINDS",
    "Change",
    "ChangeSet",
    "Consumer",
    "DeadLetter",
    "DeliveryResult",
    "FeedError",
    "add_consumer",
    "changes",
    "check_consumer",
    "current_snapshot",
    "dead_letters",
    "deliver",
    "ensure_outbox",
    "get_consumer",
    "list_consumers",
    "public_events",
    "publish",
    "remove_consumer",
    "reset_consumer",
    "sign",
]
