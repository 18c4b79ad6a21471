"""`projectionist report` end to end: the page as headless Chromium renders it, with no request leaving the file.

The screenshot is kept as ``report.png`` under the test's data root and, when ``PROJECTIONIST_ARTIFACTS``
is set (CI), copied there (as tests/pipelines/test_dagster_e2e.py does with its screenshots).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from click.testing import CliRunner

from eventstore.connection import connect
from eventstore.demo import append_demo_shop
from eventstore.native_store import NewEvent, append
from pipelines.cli import cli
from tests.chromium import launch

HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
SECTIONS = (
    "Lake size and growth",
    "Lag: store head vs lake checkpoint",
    "Event volume per day and type",
    "Stream lengths",
    "Projection versions",
)


def run(*args: str, home: Path, env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner(env=env).invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_the_report_page_in_headless_chromium(store_dsn: str, lake_env: dict[str, str], tmp_path: Path) -> None:
    env = {**lake_env, "PROJECTIONIST_EVENT_STORE_DSN": store_dsn}
    home = tmp_path / "home"
    append_demo_shop(store_dsn, events=400, writers=2, seed=5)
    with connect(store_dsn) as conn:
        append(conn, HOSTILE, "cart", [NewEvent("CartOpened", {"customer_id": "c"}) for _ in range(12)])
    assert run("ingest", "--batch-size", "150", "--long-stream-threshold", "9", home=home, env=env)[0] == 0

    code, output = run("report", "--json", home=home, env=env)
    assert code == 0, output
    model = json.loads(output)
    assert [s["stream_id"] for s in model["streams"]["longest"]] == [HOSTILE]
    assert not (home / "report.html").exists(), "--json alone writes no page"

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    code, output = run("report", "--output", str(blocked / "report.html"), home=home, env=env)
    assert code == 2 and f"error: cannot write the report to {blocked / 'report.html'}" in output, output
    assert "choose another --output" in output and len(output.strip().splitlines()) == 1

    code, output = run("report", home=home, env=env)
    page_path = home / "report.html"
    assert code == 0 and output.strip() == str(page_path), output

    from playwright.sync_api import Route, sync_playwright

    folder = home / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    dialogs: list[str] = []

    def only_the_file(route: Route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.route("**/*", only_the_file)
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(page_path.as_uri(), wait_until="load")
            page.screenshot(path=str(folder / "report.png"), full_page=True)

            for title in SECTIONS:
                assert page.get_by_role("heading", name=title, exact=True).is_visible(), title
            # The stream-length histogram: one bar per bin of the model, each drawn with a height.
            bars = page.locator("svg.histogram rect.bar")
            assert bars.count() == len(model["streams"]["bins"]) > 1
            heights = [box["height"] for box in (bars.nth(i).bounding_box() for i in range(bars.count())) if box]
            assert len(heights) == bars.count() and min(heights) > 0
            tallest = max(range(len(heights)), key=heights.__getitem__)
            counts = [n for _, _, n in model["streams"]["bins"]]
            assert counts[tallest] == max(counts), "the tallest bar is the most common length"
            # Volume: a stack per day, its segments' heights in proportion to their events.
            stacks = page.locator("svg.volume g.bar-stack")
            drawn = [int(stacks.nth(i).get_attribute("data-value") or 0) for i in range(stacks.count())]
            assert len(drawn) > 1 and sum(drawn) == sum(row["events"] for row in model["volume"])
            segments = page.locator("svg.volume rect.bar")
            assert all((segments.nth(i).bounding_box() or {"height": 0})["height"] > 0 for i in range(segments.count()))
            # Growth and lag have their charts; the long stream is named as text, not run as markup.
            assert page.locator("svg.growth .point").count() == len(model["size"]["growth"])
            assert page.locator("svg.lag polyline").count() == 2  # the store head and the lake checkpoint
            assert page.locator("svg.lag .point").count() == 2 * len(model["lag"]) > 2
            cell = page.locator("table.long-streams td.stream-id")
            assert cell.count() == 1 and cell.inner_text() == HOSTILE and cell.is_visible()
            assert page.title() == "Projectionist report" and page.locator("img").count() == 0
            # A section with nothing to show says so.
            assert page.get_by_text("No projection version built yet").is_visible()
        finally:
            browser.close()
    assert outside == [] and dialogs == []
    target = os.environ.get("PROJECTIONIST_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / "report.png", Path(target) / "report.png")
