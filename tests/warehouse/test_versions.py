"""Versioned projection tables: rebuild, incremental project, promote, rollback, retention, bad input."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import duckdb
import pytest

from eventstore.connection import connect
from eventstore.errors import ConfigurationError
from eventstore.native_store import NewEvent, StreamAppend, append_streams
from eventstore.positions import START
from projections import PoisonPolicy, Registry, discover
from projections.errors import PoisonEventError, ProjectionDefinitionError
from tests.warehouse.conftest import append_shop, with_projection
from warehouse.diff import check_expectation, compare_versions, expectation_for
from warehouse.ingest import ingest
from warehouse.lake import LakeConfig, open_lake
from warehouse.sources import StoreSource
from warehouse.versions import (
    FingerprintMismatchError,
    PromotionError,
    dead_letters,
    lag,
    lags,
    list_versions,
    project,
    promote,
    rebuild,
    retain,
    rollback,
)
from warehouse.versions.incremental import StreamKeysCache


@pytest.fixture(scope="module")
def registry() -> Registry:
    return discover(bundled=True, folder=None)


def table(con: duckdb.DuckDBPyConnection, name: str, key: str) -> list[tuple[object, ...]]:
    return con.execute(f"SELECT * FROM {name} ORDER BY {key}").fetchall()


@pytest.mark.parametrize(
    ("name", "version", "key"),
    [("cart_summary", 1, "cart_id"), ("cart_summary", 2, "cart_id"), ("daily_revenue", 1, "ALL")],
)
def test_incremental_project_equals_a_full_rebuild(
    lake_config: LakeConfig,
    source: StoreSource,
    store_dsn: str,
    registry: Registry,
    name: str,
    version: int,
    key: str,
) -> None:
    append_shop(store_dsn, 600, seed=1)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, name, version)
    assert [v.state for v in list_versions(con, name)] == ["ready"]
    for seed in (2, 3):
        append_shop(store_dsn, 300, seed=seed, transactions=2)
        ingest(con, source)
        (result,) = project(con, registry, names=[name])
        assert result.events > 0 and result.keys > 0
        # The row count moves by what the advance deleted and inserted: it is the table's, exactly.
        (counted,) = con.execute(f"SELECT count(*) FROM projections.{name}_v{version}").fetchone()
        assert result.rows == list_versions(con, name)[0].rows == counted
    assert lag(con, name, version) == (0, None)
    incremental = table(con, f"projections.{name}_v{version}", key)
    before = list_versions(con, name)[0]
    rebuilt = rebuild(con, registry, name, version)
    assert table(con, f"projections.{name}_v{version}", key) == incremental
    assert rebuilt.rows == before.rows == len(incremental)
    assert rebuilt.checkpoint == before.checkpoint


def _carts(store_dsn: str, *appends: tuple[str, list[NewEvent]]) -> None:
    with connect(store_dsn) as conn:
        append_streams(conn, [StreamAppend(stream, "cart", events) for stream, events in appends])


def _item(kind: str, product: str, quantity: object = 1, day: int = 1) -> NewEvent:
    data = {"product_id": product, "quantity": quantity, "unit_price": 2.5, "currency": "EUR"}
    return NewEvent(kind, data, event_version=2, recorded_at=datetime(2026, 3, day, 12, tzinfo=UTC))


def _ending(kind: str, day: int) -> NewEvent:
    return NewEvent(kind, {}, recorded_at=datetime(2026, 3, day, 12, tzinfo=UTC))


def test_follow_keeps_stream_contributions_between_advances_and_stays_equal_to_a_rebuild(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    """The contributions a follow process keeps (StreamKeysCache) give what a full rebuild gives.

    Carts leave their day and product (cancelled, an item removed, confirmed again a day later),
    poison arrives in old and new carts, and another process advances the versions in between
    (the kept contributions no longer match its checkpoint and are read again).
    """
    names = ["daily_revenue", "product_sales"]
    con = open_lake(lake_config)
    _carts(
        store_dsn,
        *[
            (
                f"cart-{i}",
                [
                    NewEvent("CartOpened", {"customer_id": f"c{i}"}),
                    _item("ItemAdded", f"p{i % 3}"),
                    _ending("CartConfirmed", 1),
                ],
            )
            for i in range(6)
        ],
    )
    ingest(con, source)
    for name in names:
        rebuild(con, registry, name, 1)
    cache = StreamKeysCache()
    rounds: list[list[tuple[str, list[NewEvent]]]] = [
        [
            ("cart-0", [_ending("CartCancelled", 2)]),  # leaves (day 1, EUR) and p0
            ("cart-1", [_item("ItemRemoved", "p1"), _item("ItemAdded", "p2", 3)]),  # leaves p1 for p2
            (
                "cart-6",
                [NewEvent("CartOpened", {"customer_id": "c6"}), _item("ItemAdded", "p0"), _ending("CartConfirmed", 2)],
            ),
        ],
        [("cart-2", [_ending("CartConfirmed", 3)])],  # confirmed again two days later: moves day
        [
            ("cart-3", [_item("ItemAdded", "p9", "lots")]),  # poison in an old cart
            ("cart-7", [_item("ItemAdded", "p1", "x"), _ending("CartConfirmed", 3)]),  # a new cart of poison only
            ("cart-4", [_ending("CartCancelled", 3)]),
        ],
    ]
    for number, appended in enumerate(rounds):
        _carts(store_dsn, *appended)
        ingest(con, source)
        if number == 1:
            project(con, registry, names=names)  # another process: no cache; the kept entries go stale
            _carts(store_dsn, ("cart-5", [_item("ItemAdded", "p2", 2, day=3)]))
            ingest(con, source)
        results = project(con, registry, names=names, cache=cache)
        assert sorted(r.name for r in results) == names
        for info in list_versions(con):
            if info.name in names:
                assert cache.checkpoint(info.name, info.version) == info.checkpoint
    assert cache.checkpoint("daily_revenue", 1) is not None
    for name, key in (("daily_revenue", "day, currency"), ("product_sales", "product_id, currency")):
        followed = table(con, f"projections.{name}_v1", key)
        letters = sorted(d.event_id for d in dead_letters(con, name=name))
        assert followed and letters
        rebuild(con, registry, name, 1)
        assert table(con, f"projections.{name}_v1", key) == followed
        assert sorted(d.event_id for d in dead_letters(con, name=name)) == letters


class _Counting:
    """A lake connection that records the statements run through it."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.statements: list[str] = []

    def execute(self, query: str, *args: Any) -> duckdb.DuckDBPyConnection:
        self.statements.append(" ".join(query.split()))
        return self.con.execute(query, *args)

    def sql(self, query: str, *args: Any) -> duckdb.DuckDBPyRelation:
        self.statements.append(" ".join(query.split()))
        return self.con.sql(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def test_project_with_nothing_new_reads_the_lake_once(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    assert {r.name for r in project(con, registry)} == set(registry.names())  # first versions: built, promoted
    counting = _Counting(con)
    assert project(cast(duckdb.DuckDBPyConnection, counting), registry) == []
    # One transaction reads every version and the checkpoint, however many projections there are: an
    # idle `follow` cycle. (A statement per projection, each its own transaction, cost 85 ms, not 15.)
    assert counting.statements[0] == "BEGIN" and counting.statements[-1] == "COMMIT"
    assert len(counting.statements) == 4, counting.statements
    append_shop(store_dsn, 50, seed=5, transactions=1)
    ingest(con, source)
    assert {r.name for r in project(con, registry)} == set(registry.names())  # and it still advances all


def test_a_first_build_cut_short_is_finished_by_the_next_project(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    """follow's first cycle builds the first versions; an outage in the middle left a "building" row forever."""
    from warehouse.lake import transaction
    from warehouse.versions.catalog import ensure_version_tables, live_version, upsert_version

    append_shop(store_dsn, 300)
    con = open_lake(lake_config)
    ingest(con, source)
    ensure_version_tables(con)
    highest = registry.get("cart_summary")
    with transaction(con):  # what rebuild commits before its first chunk, and the outage after it
        upsert_version(con, highest, "building", START, 0, None, None)
    (built,) = project(con, registry, names=["cart_summary"])
    live = live_version(con, "cart_summary")
    assert live is not None and live.version == highest.version and built.rows == live.rows > 0
    assert con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone() == (live.rows,)
    assert project(con, registry, names=["cart_summary"]) == []  # nothing new: nothing built again


def test_first_project_builds_and_promotes_then_gate_promote_rollback_retain(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 400)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    first = promote(con, registry, "cart_summary", 1, actor="tester")
    assert first.from_version is None and first.comparison_id is None
    with pytest.raises(PromotionError, match="not built"):
        promote(con, registry, "cart_summary", 2)
    rebuild(con, registry, "cart_summary", 2)
    with pytest.raises(PromotionError, match="projectionist diff cart_summary 1 2"):
        promote(con, registry, "cart_summary", 2)
    assert con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone() == (
        list_versions(con, "cart_summary")[0].rows,
    )
    assert "currency" not in con.sql("SELECT * FROM analytics.cart_summary LIMIT 0").columns
    promoted = promote(con, registry, "cart_summary", 2, force=True)
    assert promoted.from_version == 1
    assert "currency" in con.sql("SELECT * FROM analytics.cart_summary LIMIT 0").columns
    assert {v.version: v.state for v in list_versions(con, "cart_summary")} == {1: "retired", 2: "live"}
    append_shop(store_dsn, 100, seed=8, transactions=1)
    ingest(con, source)
    project(con, registry, names=["cart_summary"])  # advances live v2; retired v1 stays behind
    assert lag(con, "cart_summary", 1)[0] > 0
    listed = list_versions(con, "cart_summary")
    batched = lags(con, listed)  # one scan for every version
    assert {key: events for key, (events, _) in batched.items()} == {
        (v.name, v.version): lag(con, v.name, v.version)[0] for v in listed
    }
    assert all((seconds is None) == (events == 0) for events, seconds in batched.values())
    back = rollback(con, "cart_summary", registry=registry)
    assert (back.from_version, back.to_version) == (2, 1)
    assert lag(con, "cart_summary", 1) == (0, None)
    assert "currency" not in con.sql("SELECT * FROM analytics.cart_summary LIMIT 0").columns
    assert retain(con, "cart_summary", 0) == [2]
    with pytest.raises(PromotionError, match="dropped"):
        promote(con, registry, "cart_summary", 2, force=True)
    # project builds and promotes projections that have no version yet, and leaves cart_summary v1 as it is.
    results = project(con, registry)
    assert {r.name for r in results} == {"daily_revenue", "product_sales"}
    assert {v.name: v.state for v in list_versions(con) if v.name != "cart_summary"} == {
        "daily_revenue": "live",
        "product_sales": "live",
    }


def test_bad_input_changes_nothing(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry, tmp_path: Path
) -> None:
    append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    with pytest.raises(ConfigurationError, match="unknown projection 'nope'"):
        rebuild(con, registry, "nope", 1)
    with pytest.raises(ConfigurationError, match="has no version 9"):
        rebuild(con, registry, "cart_summary", 9)
    with pytest.raises(ConfigurationError, match="unknown projection"):
        project(con, registry, names=["cart_summary", "nope"])
    assert list_versions(con) == []
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.py").write_text("PROJECTION = (\n")
    with pytest.raises(ProjectionDefinitionError, match=r"bad\.py"):
        discover(broken)


def test_changed_code_without_a_version_bump_is_refused(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    con.execute("UPDATE meta.projection_versions SET fingerprint = 'f00' WHERE name = 'cart_summary'")
    append_shop(store_dsn, 100, seed=9)
    ingest(con, source)
    before = table(con, "projections.cart_summary_v1", "cart_id")
    with pytest.raises(FingerprintMismatchError, match="rebuild cart_summary --version 1"):
        project(con, registry, names=["cart_summary"])
    assert table(con, "projections.cart_summary_v1", "cart_id") == before
    rebuild(con, registry, "cart_summary", 1)
    assert project(con, registry, names=["cart_summary"]) == []


def test_poison_is_dead_lettered_live_and_stops_a_rebuild(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 200)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    append_shop(store_dsn, 100, seed=5)
    ingest(con, source)
    # Payloads a store could hold: one lacking a required field, one that is JSON but not an object
    # (malformed JSON text cannot reach the lake: raw.events.data is of type JSON, which refuses it).
    bad = con.execute(
        "SELECT event_id FROM raw.events WHERE event_type = 'ItemAdded' ORDER BY transaction_id DESC, "
        "global_position DESC LIMIT 2"
    ).fetchall()
    assert len(bad) == 2
    con.execute("UPDATE raw.events SET data = '{\"oops\": 1}' WHERE event_id = ?", [bad[0][0]])
    con.execute('UPDATE raw.events SET data = \'["not", "an object"]\' WHERE event_id = ?', [bad[1][0]])
    (result,) = project(con, registry, names=["cart_summary"])
    assert result.dead_letters == 2
    letters = dead_letters(con, name="cart_summary")
    assert {letter.event_id for letter in letters} == {bad[0][0], bad[1][0]}
    assert all(letter.version == 1 and letter.reason for letter in letters)
    rows_before = list_versions(con, "cart_summary")[0].rows
    stopping = with_projection(registry, "cart_summary", 1, poison=PoisonPolicy(live="skip", rebuild="stop"))
    with pytest.raises(PoisonEventError, match=f"{bad[1][0]}|{bad[0][0]}"):
        rebuild(con, stopping, "cart_summary", 1)
    assert list_versions(con, "cart_summary")[0].rows == rows_before
    rebuilt = rebuild(con, registry, "cart_summary", 1)  # the default skips, as live updates do
    assert rebuilt.dead_letters == 2 and rebuilt.rows == rows_before


def test_readers_never_miss_the_view_during_promotions(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 300)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    promote(con, registry, "cart_summary", 1)
    rebuild(con, registry, "cart_summary", 2)
    failures: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        reader_con = open_lake(lake_config, read_only=True)
        try:
            while not stop.is_set():
                try:
                    row = reader_con.execute("SELECT count(*) FROM analytics.cart_summary").fetchone()
                    assert row is not None and row[0] > 0
                    reads += 1
                except BaseException as exc:
                    failures.append(exc)
                    return
        finally:
            reader_con.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(4):
            promote(con, registry, "cart_summary", 2, force=True)
            rollback(con, "cart_summary")
    finally:
        stop.set()
        thread.join()
    assert failures == [] and reads > 0


def test_diff_of_cart_summary_v1_v2_opens_the_gate(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 600)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    promote(con, registry, "cart_summary", 1)
    rebuild(con, registry, "cart_summary", 2)
    with pytest.raises(PromotionError, match="projectionist diff cart_summary 1 2"):
        promote(con, registry, "cart_summary", 2)
    comparison, comparison_id = compare_versions(con, registry, "cart_summary")
    assert (comparison.a, comparison.b) == ("lake.projections.cart_summary_v1", "lake.projections.cart_summary_v2")
    assert sorted(c.name for c in comparison.schema.added) == ["currency", "distinct_products"]
    cancelled = con.execute(
        "SELECT cart_id FROM projections.cart_summary_v1 WHERE status = 'cancelled' AND total_amount <> 0 ORDER BY 1"
    ).fetchall()
    assert cancelled, "the shop must have cancelled carts with a total"
    changed = next(c for c in comparison.columns if c.name == "total_amount")
    assert changed.mismatches == len(cancelled)
    assert comparison.counts()["changed"] == len(cancelled)
    samples = comparison.samples["changed"]
    assert samples and all(s.trail is not None and s.trail.events for s in samples)
    assert {s.key["cart_id"] for s in samples} <= {str(c[0]) for c in cancelled}
    result = check_expectation(con, comparison, expectation_for(registry, "cart_summary", comparison, 2))
    assert result.satisfied, result.problems
    promoted = promote(con, registry, "cart_summary", 2)
    assert promoted.comparison_id == comparison_id
    assert rollback(con, "cart_summary").to_version == 1


def test_two_concurrent_projects_leave_the_same_rows_as_a_rebuild(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry
) -> None:
    append_shop(store_dsn, 400)
    con = open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 2)
    append_shop(store_dsn, 300, seed=6, transactions=2)
    ingest(con, source)
    errors: list[BaseException] = []

    def run_project() -> None:
        own = open_lake(lake_config)
        try:
            project(own, registry, names=["cart_summary"])
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run_project) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert lag(con, "cart_summary", 2) == (0, None)
    projected = table(con, "projections.cart_summary_v2", "cart_id")
    rebuild(con, registry, "cart_summary", 2)
    assert table(con, "projections.cart_summary_v2", "cart_id") == projected


def test_a_rebuild_that_loses_its_commit_to_another_rebuild_retries_and_records_it(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild of an existing version plans and writes in one transaction; losing its commit retries the write."""
    from warehouse.versions import rebuilding

    append_shop(store_dsn, 300)
    con, other = open_lake(lake_config), open_lake(lake_config)
    ingest(con, source)
    rebuild(con, registry, "cart_summary", 1)
    expected = table(con, "projections.cart_summary_v1", "cart_id")
    real_compute_into, calls, raced = rebuilding.compute_into, [], []

    def compute_then_race(*args: object, **kwargs: object) -> object:
        calls.append(args[3])
        inserted = real_compute_into(*args, **kwargs)  # type: ignore[arg-type]
        if len(calls) == 1:  # meanwhile, another process rebuilds the same version and commits first
            raced.append(rebuild(other, registry, "cart_summary", 1))
        return inserted

    monkeypatch.setattr(rebuilding, "compute_into", compute_then_race)
    result = rebuild(con, registry, "cart_summary", 1)
    # The first write lost its commit to the other rebuild and was run again; both built the same table.
    assert len(calls) == 3 and raced and result.rows == raced[0].rows == len(expected)
    assert table(con, "projections.cart_summary_v1", "cart_id") == expected
    (info,) = list_versions(con, "cart_summary")
    assert (info.state, info.rows) == ("ready", len(expected))
    other.close()


def test_build_seconds_cover_the_computation(
    lake_config: LakeConfig, source: StoreSource, store_dsn: str, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a one-chunk rebuild recorded only the time spent before its computation started."""
    import time

    from warehouse.versions import rebuilding

    append_shop(store_dsn, 100)
    con = open_lake(lake_config)
    ingest(con, source)
    real_compute_into = rebuilding.compute_into

    def slow_compute_into(*args: object, **kwargs: object) -> object:
        time.sleep(0.5)
        return real_compute_into(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rebuilding, "compute_into", slow_compute_into)
    for _ in range(2):  # a new version (marked building first), then a rebuild of it (one transaction)
        result = rebuild(con, registry, "cart_summary", 1)
        (info,) = list_versions(con, "cart_summary")
        assert info.build_seconds is not None and 0.5 <= info.build_seconds <= result.seconds
