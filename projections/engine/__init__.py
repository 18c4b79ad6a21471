"""Computing a projection over any DuckDB relation shaped like raw.events.

``compute`` gives a projection's rows, all of them or only those of some keys (each computed from
*all* the events of its key, so an incremental update can replace exactly those rows);
``touched_keys`` gives the keys affected by the events of a checkpoint range.

The pipeline, all of it SQL until a polars or fold body takes over:

1. upcast (``upcasting.upcast_sql``) and keep the event types the projection consumes;
2. validate each event's envelope (``recorded_at`` a Python datetime can hold, an
   ``event_version`` an upcaster or the projection declares: comparisons of its own columns) and
   its declared required fields: events failing it are *poison*, reported as
   ``(event_id, reason)``; policy ``skip`` computes without them, ``stop`` raises
   :class:`~projections.errors.PoisonEventError` naming the first one;
3. run the body; a fold also reports as poison an event it cannot decode (nested too deeply for
   Python, say) or whose ``evolve`` raises;
4. cast the result to the declared column types, keep the requested keys, order by key.

The validation runs inside the body's own pass first (``single_pass``: an event failing it raises
as soon as it is read, so a clean computation reads, upcasts and parses its events once). Only
when that raises is the computation run again with the exact checks (``two_pass``: list every
poison event first, then compute; ``precise``: also try the casts a value could overflow), which
name the events and apply the policy. So what is reported as poison never depends on which path ran.

Keys and streams: a projection keyed by stream (no ``stream_keys``) recomputes a key from its
stream's events. Otherwise ``stream_keys`` says which keys each stream contributes to; the rows of
a key are computed from every contributing stream, and a stream touched in a range affects the
keys it contributed to before the range and those it contributes to after it.

The modules, each importing only those before it: ``run`` (one computation's connection,
projection and consumed events), ``poison`` (the checks, finding and naming poison, and
``escalate``, which runs a computation through the checks), ``keys`` (key tables, stream
contributions, ``touched_keys``), ``fold`` (the fold runner) and ``compute`` (``compute``,
``compute_into``).
"""

from projections.engine.compute import ComputeResult, InsertResult, compute, compute_into
from projections.engine.keys import keys_in, keys_of_streams, stream_contributions, touched_keys, touched_streams
from projections.engine.poison import (
    CHECKS,
    DATA_ERRORS,
    Check,
    PoisonEvent,
    escalate,
    find_poison,
    first_poison_error,
    poison_besides,
    poison_stop_error,
)

__all__ = [
    "CHECKS",
    "DATA_ERRORS",
    "Check",
    "ComputeResult",
    "InsertResult",
    "PoisonEvent",
    "compute",
    "compute_into",
    "escalate",
    "find_poison",
    "first_poison_error",
    "keys_in",
    "keys_of_streams",
    "poison_besides",
    "poison_stop_error",
    "stream_contributions",
    "touched_keys",
    "touched_streams",
]
