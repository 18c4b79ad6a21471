"""End to end: `projectionist ui`'s Dagster UI (``start_ui``) on a free loopback port, a job over GraphQL, Chromium.

Screenshots are kept under the data root (``$PROJECTIONIST_HOME/artifacts`` of the test) and, when
``PROJECTIONIST_ARTIFACTS`` is set (CI), copied there.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eventstore.demo import append_demo_shop
from eventstore.settings import Settings
from pipelines.cli import cli
from pipelines.lake_sync import OUTSIDE_DAGSTER
from pipelines.ui import free_port, start_ui, stop_process_group
from tests.chromium import launch
from tests.pipelines.dagster_harness import DagsterWeb


@pytest.fixture()
def dagster_ui(store_dsn: str, lake_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[DagsterWeb, Settings]]:
    settings = Settings.from_env({}).with_overrides(
        home=tmp_path / "home",
        event_store_dsn=store_dsn,
        lake=lake_env["PROJECTIONIST_LAKE"],
        lake_data=lake_env["PROJECTIONIST_LAKE_DATA"],
    )
    append_demo_shop(store_dsn, events=800, writers=2, seed=21)
    port = free_port()
    log = tmp_path / "dagster-ui.log"
    process = start_ui(settings, port, log=log)
    web = DagsterWeb(f"http://127.0.0.1:{port}")
    try:
        web.location = web.wait_until_loaded(timeout=180, log=log)  # type: ignore[attr-defined]
        started = log.read_text(errors="replace")
        # `projectionist ui` starts without the warnings a new user was puzzled by.
        assert "SupersessionWarning" not in started and "will not be used" not in started, started
        yield web, settings
    finally:
        stop_process_group(process)  # by the PID we started, with its whole process group
        assert process.poll() is not None


def _screenshots(settings: Settings) -> Path:
    folder = settings.home / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _dismiss_welcome(page: Any) -> None:
    """Close Dagster's first-visit community dialog if it shows."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def _publish(folder: Path) -> None:
    target = os.environ.get("PROJECTIONIST_ARTIFACTS")
    if target:
        shutil.copytree(folder, target, dirs_exist_ok=True)


def test_rebuild_through_graphql_then_the_ui_shows_it(dagster_ui: tuple[DagsterWeb, Settings]) -> None:
    web, settings = dagster_ui
    location = web.location  # type: ignore[attr-defined]

    # Ingest first (the rebuild reads the lake), then rebuild cart_summary v2 as an operator would.
    ingest_run = web.launch(location, "ingest_and_project", {})
    assert web.wait_for_run(ingest_run, timeout=300) == "SUCCESS"
    run_id = web.launch(
        location, "rebuild_projection", {"ops": {"rebuild_version": {"config": {"name": "cart_summary", "version": 2}}}}
    )
    assert web.wait_for_run(run_id, timeout=300) == "SUCCESS", web.run_messages(run_id)[-20:]

    from warehouse.lake import LakeConfig, open_lake

    con = open_lake(LakeConfig.from_settings(settings), read_only=True)
    try:
        rows = con.execute("SELECT count(*) FROM projections.cart_summary_v2").fetchone()
        streams = con.execute("SELECT count(DISTINCT stream_id) FROM raw.all_events").fetchone()
    finally:
        con.close()
    assert rows == streams and rows is not None and rows[0] > 0

    # Bad input: an unknown version fails the run before anything is written, with the reason in its logs.
    bad = web.launch(
        location, "rebuild_projection", {"ops": {"rebuild_version": {"config": {"name": "cart_summary", "version": 9}}}}
    )
    assert web.wait_for_run(bad, timeout=120) == "FAILURE"
    assert any("version 9" in m or "v9" in m for m in web.run_messages(bad))

    # Work done with the CLI, outside Dagster, reaches the UI through the lake observer (running by default).
    env = {
        "PROJECTIONIST_HOME": str(settings.home),
        "PROJECTIONIST_EVENT_STORE_DSN": str(settings.event_store_dsn),
        "PROJECTIONIST_LAKE": str(settings.lake),
        "PROJECTIONIST_LAKE_DATA": str(settings.lake_data),
    }
    for args in (["diff", "cart_summary", "2", "1"], ["promote", "cart_summary", "1"]):
        done = CliRunner().invoke(cli, args, env=env)
        assert done.exit_code == 0, done.output
    deadline = time.monotonic() + 150
    latest = web.latest_materialization(["analytics", "cart_summary"])
    while time.monotonic() < deadline and not (latest and latest["metadata"].get("live_version") == 1):
        time.sleep(3)
        latest = web.latest_materialization(["analytics", "cart_summary"])
    assert latest is not None and latest["metadata"].get("live_version") == 1, latest
    assert latest["description"] == OUTSIDE_DAGSTER

    from playwright.sync_api import sync_playwright

    folder = _screenshots(settings)
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{web.url}/locations/{location}/asset-groups/projections", wait_until="networkidle")
            _dismiss_welcome(page)
            page.get_by_text("cart_summary").first.wait_for(timeout=60_000)
            page.screenshot(path=str(folder / "asset-graph.png"))
            body = page.inner_text("body")
            assert "cart_summary" in body and "daily_revenue" in body and "product_sales" in body

            page.goto(f"{web.url}/assets/projections/cart_summary", wait_until="networkidle")
            _dismiss_welcome(page)
            page.get_by_text("v2", exact=True).first.wait_for(timeout=60_000)
            listing = page.inner_text("body")
            assert "v1" in listing and "v2" in listing, "both versions of cart_summary are assets"

            page.goto(f"{web.url}/assets/projections/cart_summary/v2", wait_until="networkidle")
            _dismiss_welcome(page)
            page.get_by_text("checkpoint").first.wait_for(timeout=60_000)
            page.screenshot(path=str(folder / "cart_summary_v2.png"), full_page=True)
            text = page.inner_text("body")
            assert "rows" in text and "checkpoint" in text and "state" in text

            page.goto(f"{web.url}/assets/analytics/cart_summary", wait_until="networkidle")
            _dismiss_welcome(page)
            page.get_by_text("live_version").first.wait_for(timeout=60_000)
            page.screenshot(path=str(folder / "analytics_cart_summary.png"), full_page=True)
            assert "Never materialized" not in page.inner_text("body"), "the CLI's promotion shows in the UI"
        finally:
            browser.close()
    _publish(folder)
