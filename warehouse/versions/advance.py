"""Incremental advance: live and ready versions brought up to the lake's ingest checkpoint; how far behind they are."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb

from eventstore.errors import ConfigurationError
from eventstore.positions import Checkpoint, in_range
from projections import Registry
from warehouse.errors import PromotionError
from warehouse.ingest import lake_checkpoint
from warehouse.lake import computing_in_memory, transaction
from warehouse.versions.catalog import (
    ALL_VERSIONS,
    VERSION_COLUMNS,
    ProjectResult,
    VersionInfo,
    check_fingerprint,
    ensure_version_tables,
    find_version,
    live_version,
    validate_target,
    version_info,
)
from warehouse.versions.cycle import StreamMemory, cycle_events
from warehouse.versions.lake_events import EVENTS

if TYPE_CHECKING:
    from warehouse.ingest import LandedBatch
    from warehouse.versions.incremental import StreamKeysCache  # the engine: polars, pyarrow

__all__ = ["advance_version", "lag", "lags", "project"]


def project(
    con: duckdb.DuckDBPyConnection,
    registry: Registry,
    *,
    names: Sequence[str] | None = None,
    progress: Callable[[str, int], None] | None = None,
    cache: StreamKeysCache | None = None,
    memory: StreamMemory | None = None,
    until: Checkpoint | None = None,
    staged: LandedBatch | None = None,
) -> list[ProjectResult]:
    """Advance every live and ready version to the lake's ingest checkpoint, recomputing only touched keys.

    A registered projection with no version in the lake at all gets its highest version built and
    promoted (its first promotion needs no comparison). Versions not built yet are rebuild's job.
    The versions behind read the touched streams' events from the lake once, together
    (:mod:`warehouse.versions.cycle`). ``cache`` (``follow`` keeps one) remembers each version's
    stream contributions from one call to the next, ``memory`` (kept likewise) the lake's streams.
    ``until``: a checkpoint the lake's ingest has reached, as the caller knows it (``follow``, right after
    its ingest): the versions advance to it, and the lake's checkpoint is not read. ``staged``: that
    ingest's staged batch, read instead of the lake when it is exactly the events the versions lack.
    """
    # Computing loads the projection engine (polars, pyarrow): imported here, so that :func:`lag`
    # (``status``, ``versions``) does not pay for it.
    from warehouse.versions.incremental import advance_to, forgotten_count
    from warehouse.versions.promotion import promote
    from warehouse.versions.rebuilding import rebuild

    chosen = list(names) if names is not None else registry.names()
    for name in chosen:
        validate_target(registry, name)

    # Every version and the ingest checkpoint in one read, from one snapshot: with nothing new (an
    # idle `follow` cycle) this is all a call costs. A statement per projection, each in its own
    # transaction, took about 85 ms for the demo's projections; this takes about 15 (measured).
    def read() -> tuple[list[tuple[Any, ...]], Checkpoint]:
        if until is not None:  # one statement
            return con.execute(ALL_VERSIONS).fetchall(), until
        with transaction(con):
            return con.execute(ALL_VERSIONS).fetchall(), lake_checkpoint(con)[0]

    try:
        versions, target = read()
    except duckdb.CatalogException:  # a new lake, or one from before the version tables
        ensure_version_tables(con)
        versions, target = read()
    by_name: dict[str, list[VersionInfo]] = {}
    for row in versions:
        by_name.setdefault(str(row[0]), []).append(version_info(row))
    results: list[ProjectResult] = []
    behind: list[tuple[Any, VersionInfo]] = []
    for name in chosen:
        recorded = by_name.get(name, [])
        # No version yet, or only a first build that an outage or a signal cut short (its row says "building",
        # and nothing else would ever finish it): build and promote the highest version (a rebuild resumes).
        highest = registry.get(name).version
        if all(info.state == "building" and info.version == highest for info in recorded):
            projection = registry.get(name)
            results.append(rebuild(con, registry, name, projection.version))
            try:
                promote(con, registry, name, projection.version, force=True, actor="project (first version)")
            except PromotionError:
                # Another process (a second machine's `project`, a Dagster run) built and promoted the
                # same first version meanwhile: that is what this call wanted too.
                live = live_version(con, name)
                if live is None or live.version != projection.version:
                    raise
            if progress is not None:
                progress(f"{projection.table_name} built and promoted", results[-1].rows)
            continue
        for info in recorded:
            if info.state not in ("live", "ready"):
                continue
            if info.version not in registry.versions(name):
                continue  # its module is gone: it keeps its rows but can no longer advance
            projection = registry.get(name, info.version)
            check_fingerprint(projection, info)
            if target <= info.checkpoint:
                continue
            behind.append((projection, info))
    if not behind:
        return results
    forgotten = forgotten_count(con) if cache is not None or memory is not None else 0
    lowest = min(info.checkpoint for _, info in behind)
    # Every relation an advance names is temporary, registered or qualified (computing_in_memory).
    # Versions keyed by stream first: their cost follows what is new, while a key that many streams
    # contribute to (a day's revenue) is recomputed from all of them; the cheap ones commit first.
    behind.sort(key=lambda pair: not pair[0].keyed_by_stream)
    events = cycle_events(con, lowest, target, memory=memory, forgotten=forgotten, staged=staged)
    with computing_in_memory(con), events as cycle:
        for projection, info in behind:
            result = advance_to(con, registry, projection, info, target, cycle=cycle, cache=cache, forgotten=forgotten)
            if result is None:
                continue
            results.append(result)
            if progress is not None:
                progress(projection.table_name, result.events)
    return results


def _idle(info: VersionInfo) -> ProjectResult:
    """The result of a call that found nothing to do for ``info``: no event, no key, its rows and checkpoint."""
    return ProjectResult(info.name, info.version, 0, 0, info.rows, info.checkpoint, 0, 0.0)


def advance_version(con: duckdb.DuckDBPyConnection, registry: Registry, name: str, version: int) -> ProjectResult:
    """Bring one recorded version of ``name`` up to the lake's ingest checkpoint, as :func:`project` does.

    Always a result: one with zero events when the version is already there, is not advancing
    (``retired``, ``building``, ``dropped``) or was advanced by another process meanwhile, so a
    scheduled run against an idle store records "nothing to do" instead of failing. A version the
    lake does not hold is refused (:class:`ConfigurationError`): it needs a rebuild first.
    """
    from warehouse.versions.incremental import advance_to

    projection = validate_target(registry, name, version)

    def read() -> tuple[tuple[Any, ...] | None, Checkpoint]:
        with transaction(con):
            row = con.execute(
                f"SELECT {VERSION_COLUMNS} FROM meta.projection_versions WHERE name = ? AND version = ?",
                [name, version],
            ).fetchone()
            return row, lake_checkpoint(con)[0]

    try:
        row, until = read()
    except duckdb.CatalogException:  # a lake from before the version tables
        row = None
    if row is None:
        raise ConfigurationError(
            f"{projection.table_name} is not in the lake yet: rebuild it first "
            f"(`projectionist rebuild {name} --version {version}`)."
        )
    info = version_info(row)
    if info.state not in ("live", "ready"):
        return _idle(info)
    check_fingerprint(projection, info)
    if until <= info.checkpoint:
        return _idle(info)
    with computing_in_memory(con), cycle_events(con, info.checkpoint, until) as cycle:
        result = advance_to(con, registry, projection, info, until, cycle=cycle)
    if result is not None:
        return result
    now = find_version(con, name, version)  # another process advanced it first: report where it is now
    return _idle(now if now is not None else info)


def lag(con: duckdb.DuckDBPyConnection, name: str, version: int) -> tuple[int, float | None]:
    """Events, and seconds (since the oldest of them was recorded), version ``version`` is behind ingest."""
    info = find_version(con, name, version)
    if info is None:
        raise ConfigurationError(f"{name} v{version} is not in the lake: run `projectionist rebuild` first.")
    until, _ = lake_checkpoint(con)
    after = info.checkpoint
    row = con.execute(f"SELECT count(*), min(recorded_at) FROM {EVENTS} WHERE {in_range(after, until)}").fetchone()
    if row is None or not row[0]:
        return 0, None
    oldest: datetime = row[1]
    return int(row[0]), max(0.0, (datetime.now(UTC) - oldest).total_seconds())


def lags(
    con: duckdb.DuckDBPyConnection, versions: Iterable[VersionInfo]
) -> dict[tuple[str, int], tuple[int, float | None]]:
    """:func:`lag` of each of ``versions`` (as :func:`list_versions` gives them), by ``(name, version)``.

    One read of the ingest checkpoint and one scan of the events after the oldest checkpoint, counted
    per version: ``status`` and ``versions`` listing N versions made 4 N catalog round trips and N scans.
    """
    chosen = list(versions)
    if not chosen:
        return {}
    until, _ = lake_checkpoint(con)
    behind = [v for v in chosen if v.checkpoint < until]
    result: dict[tuple[str, int], tuple[int, float | None]] = {(v.name, v.version): (0, None) for v in chosen}
    if not behind:
        return result
    oldest = min(v.checkpoint for v in behind)
    columns = []
    for v in behind:
        tx, position = int(v.checkpoint.transaction_id), int(v.checkpoint.global_position)
        after = f"transaction_id > {tx} OR (transaction_id = {tx} AND global_position > {position})"
        columns += [f"count(*) FILTER (WHERE {after})", f"min(recorded_at) FILTER (WHERE {after})"]
    row = con.execute(f"SELECT {', '.join(columns)} FROM {EVENTS} WHERE {in_range(oldest, until)}").fetchone()
    assert row is not None
    now = datetime.now(UTC)
    for i, v in enumerate(behind):
        count, first = int(row[2 * i]), row[2 * i + 1]
        result[(v.name, v.version)] = (count, max(0.0, (now - first).total_seconds())) if count else (0, None)
    return result
