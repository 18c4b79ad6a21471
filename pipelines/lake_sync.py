"""What the lake holds, as Dagster asset events: the UI tells the truth after work done outside Dagster.

`projectionist demo`, `ingest`, `project`, `rebuild`, `promote`, `rollback` and `follow` change the
lake without a Dagster run. :func:`lake_events` compares the lake's own record (the ingest
checkpoint, ``meta.projection_versions``, the live versions) with the latest materialization
Dagster holds of each asset and returns a runless :class:`dagster.AssetMaterialization` for each
asset whose state differs, carrying the same metadata keys the assets record. Nothing is returned
for an asset Dagster already shows as it is, so a run of the assets themselves is never doubled.

The ``lake_observer`` sensor (running by default: it reports, it never launches a run) and
`projectionist ui` at start-up feed these events to the instance, so the UI never shows "Never
materialized" for a table the CLI built. The CLI itself does not import Dagster (about 3 s).
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import duckdb

from pipelines.assets import EVENT_VOLUME, RAW_EVENTS, STREAM_STATS, analytics_key, version_key
from warehouse.ingest import lake_checkpoint

__all__ = ["OUTSIDE_DAGSTER", "lake_events"]

#: The description of every event reported here: the work was done by the CLI or `follow`.
OUTSIDE_DAGSTER = "recorded from the lake: done outside Dagster (projectionist CLI or follow)"


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> Mapping[str, Any] | None:
    """The metadata values of the latest materialization of ``key``, None if it has none."""
    entry = instance.get_latest_materialization_event(key)
    materialization = entry.asset_materialization if entry is not None else None
    if materialization is None:
        return None
    return {name: value.value for name, value in materialization.metadata.items()}


def _differs(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    return recorded is None or any(str(recorded.get(k)) != str(v) for k, v in current.items())


def _event(key: dg.AssetKey, metadata: Mapping[str, Any]) -> dg.AssetMaterialization:
    typed = {k: dg.MetadataValue.int(v) if isinstance(v, int) else str(v) for k, v in metadata.items()}
    return dg.AssetMaterialization(asset_key=key, description=OUTSIDE_DAGSTER, metadata=typed)


def _count(con: duckdb.DuckDBPyConnection, relation: str) -> int | None:
    try:
        row = con.execute(f"SELECT count(*) FROM {relation}").fetchone()
    except duckdb.CatalogException:
        return None
    return int(row[0]) if row else 0


def lake_events(
    instance: dg.DagsterInstance, con: duckdb.DuckDBPyConnection, projections: set[tuple[str, int]]
) -> list[dg.AssetMaterialization]:
    """Runless materializations for every asset whose lake state Dagster does not show yet.

    ``projections`` are the (name, version) pairs that are assets of the definitions; versions in
    the lake of projections no longer registered have no asset and are left out.
    """
    from warehouse import versions

    events: list[dg.AssetMaterialization] = []
    try:
        checkpoint, total = lake_checkpoint(con)
    except duckdb.CatalogException:  # a lake that was never ingested into
        return events
    if total:
        raw = {"to_position": str(checkpoint), "events_in_lake": total}
        recorded = _latest(instance, RAW_EVENTS)
        if recorded is None or str(recorded.get("to_position")) != raw["to_position"]:
            events.append(_event(RAW_EVENTS, raw))
            for key in (STREAM_STATS, EVENT_VOLUME):  # the CLI's ingest refreshes them with raw.events
                rows = _count(con, f"analytics.{key.path[-1]}")
                if rows is not None:
                    events.append(_event(key, {"rows": rows}))
    by_name: dict[str, int] = {}
    for info in versions.list_versions(con):
        if (info.name, info.version) not in projections or info.state in ("building", "dropped"):
            continue
        if info.state == "live":
            by_name[info.name] = info.version
        current = {"checkpoint": str(info.checkpoint), "state": info.state, "rows": info.rows}
        key = version_key(info.name, info.version)
        if _differs(_latest(instance, key), current):
            events.append(_event(key, {**current, "fingerprint": info.fingerprint, "dagster/row_count": info.rows}))
    for name, live in sorted(by_name.items()):
        key = analytics_key(name)
        recorded = _latest(instance, key)
        if recorded is None or str(recorded.get("live_version")) != str(live):
            rows = _count(con, f"analytics.{name}")
            events.append(_event(key, {"live_version": live, **({"rows": rows} if rows is not None else {})}))
    return events
