"""The worst events PostgreSQL stores in the native table, end to end: ingest, project, rebuild.

Each must end in the projections or in meta.dead_letters with a reason, for every projection of
the shop (SQL, polars and fold bodies), incrementally and in a rebuild alike; none may block the
ingest or the versions after it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from eventstore.adapters import NativeAdapter
from eventstore.connection import connect
from projections import discover
from tests.pipelines.lakecheck import assert_versions_equal_fresh_computation
from tests.warehouse.conftest import append_shop
from warehouse import versions
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource

_ITEM = {"product_id": "SKU-001", "quantity": 1, "unit_price": 2.5, "currency": "EUR"}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


#: name → (event_type, event_version, data as JSON text, recorded_at as SQL, poison for consumers of the type)
WORST: dict[str, tuple[str, int, str, str, bool]] = {
    "recorded_at infinity": ("ItemAdded", 1, json.dumps(_ITEM), "'infinity'", True),
    "recorded_at -infinity": ("ItemAdded", 1, json.dumps(_ITEM), "'-infinity'", True),
    "recorded_at in year 200000": ("ItemAdded", 1, json.dumps(_ITEM), "'200000-01-01 00:00:00+00'", True),
    "recorded_at BC": ("ItemAdded", 1, json.dumps(_ITEM), "'0044-03-15 12:00:00+00 BC'", True),
    "nested 1,000 deep": (
        "ItemAdded",
        1,
        json.dumps(_ITEM)[:-1] + f', "extra": {_nested(1000)}}}',
        "clock_timestamp()",
        False,  # SQL bodies read it; a fold, which decodes it in Python, dead-letters it
    ),
    "unit_price 1e400": (
        "ItemAdded",
        1,
        json.dumps({**_ITEM, "unit_price": 0})[:-1] + ', "unit_price": 1e400}',
        "now()",
        True,
    ),
    "quantity is text": ("ItemAdded", 1, json.dumps({**_ITEM, "quantity": "three"}), "now()", True),
    "data is a JSON string": ("ItemAdded", 1, '"just text"', "now()", True),
    "data is JSON null": ("ItemAdded", 1, "null", "now()", True),
    "event_version 99": ("ItemAdded", 99, json.dumps(_ITEM), "now()", True),
    "event_version 0": ("ItemAdded", 0, json.dumps(_ITEM), "now()", True),
    "event_version -1": ("ItemAdded", -1, json.dumps(_ITEM), "now()", True),
    "a 4 MB payload": ("ItemAdded", 1, json.dumps({**_ITEM, "note": "x" * 4_000_000}), "now()", False),
    "an unknown type": ("MysteryHappened", 7, '{"a": [1e400]}', "'infinity'", False),
}


def _append_worst(dsn: str) -> dict[str, str]:
    """Append each WORST event to a confirmed cart of its own, by plain SQL as any writer could; name → event id."""
    ids = {}
    with connect(dsn) as conn:
        for name, (event_type, event_version, data, recorded_at, _) in WORST.items():
            event_id = str(uuid.uuid4())
            stream = f"cart-worst-{uuid.uuid4().hex[:8]}"
            conn.execute(
                "INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, event_version, "
                "data, recorded_at) VALUES (%s, 'cart', 1, %s, 'CartOpened', 1, '{\"customer_id\": \"c1\"}', now())",
                (stream, str(uuid.uuid4())),
            )
            conn.execute(
                "INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, event_version, "
                f"data, recorded_at) VALUES (%s, 'cart', 2, %s, %s, %s, %s::jsonb, {recorded_at})",
                (stream, event_id, event_type, event_version, data),
            )
            conn.execute(  # confirmed, so the projections that count confirmed carts read it too
                "INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, data) "
                "VALUES (%s, 'cart', 3, %s, 'CartConfirmed', '{}')",
                (stream, str(uuid.uuid4())),
            )
            ids[name] = event_id
        conn.commit()
    return ids


def _letters(con: Any) -> dict[tuple[str, int], dict[str, str]]:
    """(projection, version) → event id → reason."""
    found: dict[tuple[str, int], dict[str, str]] = {}
    for letter in versions.dead_letters(con):
        if letter.version is not None:
            found.setdefault((letter.projection, letter.version), {})[letter.event_id] = letter.reason
    return found


@pytest.mark.parametrize("path", ["incremental", "rebuild"])
def test_the_worst_events_never_block_ingest_or_projections(
    path: str, store_dsn: str, lake_config: LakeConfig, source: StoreSource
) -> None:
    registry = discover()
    append_shop(store_dsn, 400)
    con = open_lake(lake_config)
    try:
        ingest(con, source)
        if path == "incremental":
            versions.project(con, registry)  # every projection built and live on good events first
        ids = _append_worst(store_dsn)
        with NativeAdapter(store_dsn) as reader:
            ingested = ingest(con, StoreSource(reader))
        assert ingested.events == 3 * len(WORST), "every event reaches the lake, the worst included"
        if path == "incremental":
            advanced = versions.project(con, registry)
            assert {r.name for r in advanced} == set(registry.names()), "every projection advanced past them"
        else:
            versions.project(con, registry)
            for projection in registry:
                versions.rebuild(con, registry, projection.name, projection.version)
        letters = _letters(con)
        built = [registry.get(v.name, v.version) for v in versions.list_versions(con) if v.state in ("live", "ready")]
        assert len(built) == (len(registry.names()) if path == "incremental" else len(list(registry)))
        for projection in built:
            held = letters.get((projection.name, projection.version), {})
            consumes_items = "ItemAdded" in projection.consumes
            for name, (_, _, _, _, poison) in WORST.items():
                event_id = ids[name]
                is_fold = projection.kind == "fold"
                expected = consumes_items and name != "an unknown type" and (poison or (is_fold and "nested" in name))
                assert (event_id in held) == expected, (projection.label, name, held.get(event_id))
                if expected:
                    assert held[event_id].strip(), "a dead letter says why"
        # What is not dead-lettered is projected: every version equals a fresh computation over the lake.
        assert assert_versions_equal_fresh_computation(con) == len(built)
        # The versions after the worst events still advance.
        append_shop(store_dsn, 100, seed=8)
        with NativeAdapter(store_dsn) as reader:
            assert ingest(con, StoreSource(reader)).events > 0
        assert all(r.events > 0 for r in versions.project(con, registry) if r.name == "cart_summary")
    finally:
        con.close()
